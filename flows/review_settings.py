"""What the CLI needs to know about reviews before anything heavy is imported."""

from __future__ import annotations

from typing import Literal

# `generate`'s `settings`: the sampling settings given to it, or the model version's
# recommended ones (stored by `review --promote`).
SettingsSource = Literal["given", "recommended"]
RECOMMENDED_TAG = "gptforge.recommended_settings"
