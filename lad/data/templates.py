"""Prompt templates: how a raw problem becomes the chat messages of a canonical record."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator

PROBLEM = "{problem}"
STARTER = "{starter_code}"


class PromptTemplate(BaseModel):
    """Chat template of one prep run; recorded verbatim in report.json.

    Placeholders are substituted literally (not with str.format) so LaTeX braces in problems and
    in the instructions themselves (\\boxed{}) need no escaping.
    """

    system: Optional[str] = Field(
        "You are a careful assistant. Think step by step, then give the final answer.",
        description="system message; null for none",
    )
    math: str = Field(
        "{problem}\n\nPut the final answer in \\boxed{}.",
        description="user message of math rows; must contain {problem}",
    )
    code: str = Field(
        "{problem}\n\nWrite the solution as one Python code block that starts with ```python and ends with ```.",
        description="user message of code rows; must contain {problem}",
    )
    starter: str = Field(
        "\n\nStart from this code:\n```python\n{starter_code}\n```",
        description="appended to the code message when the row has starter code; must contain {starter_code}",
    )

    @field_validator("math", "code")
    @classmethod
    def _has_problem(cls, v: str) -> str:
        if PROBLEM not in v:
            raise ValueError(f"template must contain {PROBLEM}")
        return v

    @field_validator("starter")
    @classmethod
    def _has_starter(cls, v: str) -> str:
        if STARTER not in v:
            raise ValueError(f"template must contain {STARTER}")
        return v

    def render(self, ability: Literal["math", "code"], problem: str, starter_code: Optional[str] = None) -> list[dict]:
        """The chat messages for one problem."""
        user = (self.math if ability == "math" else self.code).replace(PROBLEM, problem.strip())
        if ability == "code" and starter_code and starter_code.strip():
            user += self.starter.replace(STARTER, starter_code.strip("\n"))
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": user})
        return messages
