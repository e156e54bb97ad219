"""The base of every user-facing model: strict at the edge."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Rejects unknown fields; accepts camelCase (YAML) and snake_case (Python)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
