"""The error an LLM client raises for a problem the user can fix (server down, bad spec, ...)."""

from ..errors import InterpError


class LLMError(InterpError):
    """An LLM client that cannot do its job at all, as opposed to one failed request.

    Single failed requests are returned as ``Completion.error`` (or an empty log-prob dict) so a
    batch keeps going; this is raised when retrying later or changing the setup is the only fix.
    """
