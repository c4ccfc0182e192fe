"""Which language an enquiry is written in: lingua's detector, its n-gram models shipped in its wheel.

Nothing is downloaded at run time. The detector is built once per process (each parse worker builds its
own on first use) over a restricted set of languages in low-accuracy mode: trigram models only, about
20 MB resident instead of about 350 MB for every model of these languages, and some 30,000 short texts
a second on one core (bench/bench_owners.py measures it). Short or mixed texts it cannot tell apart
get no language rather than a guess.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import LanguageDetector

# ISO 639-1 codes the detector chooses between: the languages enquiries arrive in for most teams in
# Europe and the Americas. A language outside the set is reported as the closest one in it, so keep it
# to languages you route on.
LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "sv", "da", "pl")
SAMPLE_CHARS = 1_000  # the opening of the text is enough, and keeps long mails cheap


@cache
def detector() -> LanguageDetector:
    """The process's detector (built on first use)."""
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_low_accuracy_mode().build()


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of `text`'s language, or None when it cannot be told."""
    sample = text[:SAMPLE_CHARS].strip()
    if len(sample) < 3:
        return None
    found = detector().detect_language_of(sample)
    return found.iso_code_639_1.name.lower() if found is not None else None
