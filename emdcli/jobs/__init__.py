"""Jobs: a job is a small, validated, picklable plan (:mod:`.plan`); running it is one
straight line (:mod:`.run`): a source yields batches → the metric → the sinks."""
