# ruff: noqa: E501 (the parts are prose; wrapping them would only make them harder to read)
"""Shared parts of composed messages: names, brands, and the ways a URL is disguised.

Attack composers use `bad_url` (defanged, look-alike, homoglyph, brand-as-subdomain, shortened or
spaced-out links); benign security notes quote `defanged_ioc` indicators, as analysts do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

NAMES = ["Alex", "Sam", "Priya", "Tom", "Maria", "Kenji", "Fatima", "Luca", "Grace", "Omar", "Ines", "Dev"]
SURNAMES = ["Moreau", "Okafor", "Schmidt", "Nakamura", "Silva", "Kowalski", "Haddad", "Murphy", "Chen"]
BRANDS = {
    "PayPal": "paypal",
    "Amazon": "amazon",
    "Microsoft": "microsoft",
    "Apple": "apple",
    "Netflix": "netflix",
    "Chase": "chase",
    "Barclays": "barclays",
    "DHL": "dhl",
    "Wells Fargo": "wellsfargo",
    "Office 365": "office365",
    "Dropbox": "dropbox",
    "Google": "google",
}
TLDS = ["com", "net", "info", "top", "xyz", "help", "live", "site", "online", "co"]
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441"}
DIGIT_SWAPS = {"o": "0", "l": "1", "i": "1", "e": "3", "a": "4"}


def pick(rng: random.Random, items: Sequence[str]) -> str:
    return items[rng.randrange(len(items))]


# --- URL disguises --------------------------------------------------------------------------------


def lookalike(rng: random.Random, word: str) -> str:
    """A brand word with one letter swapped for a digit or a Cyrillic homoglyph."""
    spots = [i for i, ch in enumerate(word) if ch in HOMOGLYPHS or ch in DIGIT_SWAPS]
    if not spots:
        return word + "-secure"
    i = rng.choice(spots)
    table = HOMOGLYPHS if rng.random() < 0.5 and word[i] in HOMOGLYPHS else DIGIT_SWAPS
    return word[:i] + table.get(word[i], word[i]) + word[i + 1 :]


def bad_url(rng: random.Random, brand_word: str) -> str:
    suffix = pick(rng, ["verify", "secure", "login", "account", "support", "billing", "update", "auth"])
    tld = pick(rng, TLDS)
    path = pick(
        rng, ["", "/login", "/verify", "/confirm?id=" + str(rng.randrange(1000, 99999)), "/a/" + suffix]
    )
    style = rng.randrange(7)
    if style == 0:
        return f"https://{brand_word}-{suffix}.{tld}{path}"
    if style == 1:
        return f"hxxps://{brand_word}-{suffix}[.]{tld}{path}"
    if style == 2:
        return f"http://{lookalike(rng, brand_word)}.{tld}{path}"
    if style == 3:
        return f"https://{brand_word}.com.{suffix}-center.{tld}{path}"
    if style == 4:
        return f"{pick(rng, ['bit.ly', 'tinyurl.com', 'cutt.ly', 'is.gd'])}/{brand_word[:3]}{rng.randrange(100, 999)}"
    if style == 5:
        return " ".join(f"{brand_word}-{suffix}.{tld}")
    return f"{lookalike(rng, brand_word)}-{suffix}.{tld}"


def defanged_ioc(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"hxxps://{pick(rng, list(BRANDS.values()))}-{pick(rng, ['verify', 'login', 'docs'])}[.]{pick(rng, TLDS)}"
    if kind == 1:
        return f"{rng.randrange(11, 223)}.{rng.randrange(0, 255)}.{rng.randrange(0, 255)}[.]{rng.randrange(1, 254)}"
    return f"{pick(rng, ['invoice', 'secure', 'office', 'cloud'])}-{pick(rng, ['share', 'portal', 'files'])}[.]{pick(rng, TLDS)}"
