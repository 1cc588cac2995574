"""'Not reported': the answer for a question the paper does not answer, and how to recognise one.

`NOT_REPORTED` is the wording the prompts ask the teacher for and the merged record uses. Teachers
word it in many ways, so `is_not_reported` accepts an answer as "not reported" when, after NFKC
normalisation and leading punctuation, it has no letter or digit at all, or it opens with:

- "not" + reported / stated / mentioned / specified / described / given / available / provided /
  addressed ("Not reported in this part.", "not stated"),
- "no information", "no data", "no detail(s)", "none reported", "none stated",
- "the paper / study / text / article / excerpt does not report / state / mention / specify /
  provide",

or it is "N/A", "NA" or "unknown" alone. Case and white space do not matter. Answers that merely
start with "not" ("Not only MGMT but also MLH1 ...") or "non" ("Non-small cell ...") are answers.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["NOT_REPORTED", "is_not_reported"]

NOT_REPORTED = "Not reported in the paper."

_NOT_REPORTED_OPENING = re.compile(
    r"^\W*(?:not\s+(?:reported|stated|mentioned|specified|described|given|available|provided|addressed)"
    r"|no\s+(?:information|data|details?)\b|none\s+(?:reported|stated)|n/?a\W*$|unknown\W*$"
    r"|(?:the\s+)?(?:paper|study|text|article|excerpt)\s+does\s+not\s+(?:report|state|mention|specify|provide))",
    re.IGNORECASE,
)
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def is_not_reported(answer: str) -> bool:
    """Whether `answer` says the paper does not report it, in any of the wordings above."""
    answer = unicodedata.normalize("NFKC", answer).strip()
    return not _LETTER_OR_DIGIT.search(answer) or bool(_NOT_REPORTED_OPENING.match(answer))
