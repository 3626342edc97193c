"""The one exception type that reaches the user as a sentence."""


class UserError(ValueError):
  """Bad input from the user: printed as one sentence, exit status 2.

  Raise it with a message that says what is wrong and what to do, before any
  compute where possible. Everything else is a bug and keeps its traceback.
  """
