"""The one exception type that carries a bad-input report to the user."""


class EMDInputError(ValueError):
    """Bad input, located as precisely as possible.

    ``source`` says which input is at fault ("pred", "target", "positions", …); the CLI maps
    it to a file name. ``row`` and ``column`` are 0-based. ``hint`` says how to fix it.
    """

    def __init__(self, message, *, source=None, row=None, column=None, hint=None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.row = row
        self.column = column
        self.hint = hint

    def shifted(self, offset):
        """The same error with ``row`` moved by ``offset`` (a batch's first row)."""
        row = None if self.row is None else self.row + offset
        return EMDInputError(
            self.message, source=self.source, row=row, column=self.column, hint=self.hint
        )

    def describe(self, name=None):
        """One line: ``name: row r, column c: message; hint``."""
        parts = []
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if name:
            parts.append(name)
        if where:
            parts.append(", ".join(where))
        parts.append(self.message)
        text = ": ".join(parts)
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __str__(self):
        return self.describe(self.source)


def one_line(error):
    """An exception's text on one line, printable characters only."""
    text = " ".join(str(error).split())
    return "".join(ch if ch.isprintable() else "?" for ch in text)
