"""Who may write to whom: the rule at the heart of the product."""

from chat.permission.rule import Decision, Facts, Reason, decide

__all__ = ["Decision", "Facts", "Reason", "decide"]
