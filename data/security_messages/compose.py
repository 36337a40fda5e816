# ruff: noqa: E501 (the parts are prose; wrapping them would only make them harder to read)
"""Composed examples: messages assembled from hand-written parts, to widen the hand-written core.

Every part was written for this dataset. A composer picks a carrier (SMS line, chat message,
email, document, tool output), fills it with parts, and for the attack classes (attacks.py) varies
how the bad part is disguised: defanged or look-alike URLs (disguise.py), Unicode homoglyphs,
spaced-out letters, instructions hidden in comments, footers or JSON fields. Hard negatives (here)
get the same treatment: benign security notes quote defanged indicators, spam carries links,
benign requests say "ignore" or "act as".

Composition is seeded, so `build.py` reproduces the same files byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from attacks import (
    injection_direct,
    injection_hidden,
    injection_roleplay,
    phishing_alert,
    phishing_bec,
    phishing_callback,
    phishing_delivery,
    phishing_workplace,
)
from disguise import BRANDS, NAMES, SURNAMES, defanged_ioc, lookalike, pick

Example = tuple[str, str, str]  # (text, label, source)


# --- benign ---------------------------------------------------------------------------------------


def benign_chat(rng: random.Random) -> str:
    opener = pick(rng, ["", "hey ", "Hi! ", "yo ", "Morning! ", "Quick one: ", "Sorry to bug you, "])
    body = pick(
        rng,
        [
            "can you send me the {doc} by {deadline}?",
            "are we still meeting at {place} at {time}?",
            "I'm at {place}, where are you?",
            "don't forget the {doc} for {day}",
            "can you water the plants while I'm away {day}?",
            "{name} is bringing cake at {time} 🎂",
            "got the {thing}, see you at {time}",
            "I left my {thing} at {place}, can you grab it?",
            "the {doc} looks good to me, ship it",
            "{name} says the {thing} is fixed now",
            "running late, start without me",
            "did you book the {place} for {day}?",
            "can we push our call to {day}?",
            "thanks for covering for me on {day}, I owe you one",
            "is the {thing} in {place} working again?",
        ],
    )
    text = opener + body.format(
        doc=pick(rng, ["slides", "budget sheet", "draft", "contract", "agenda", "photos", "minutes"]),
        time=pick(rng, ["noon", "3pm", "5:30", "10am", "half past four", "7"]),
        deadline=pick(rng, ["tomorrow", "end of day", "Friday", "lunchtime", "the weekend"]),
        place=pick(rng, ["the office", "reception", "the usual cafe", "room 2B", "the gym", "mum's"]),
        thing=pick(rng, ["charger", "laptop", "umbrella", "printer", "badge", "keys", "coffee machine"]),
        name=pick(rng, NAMES),
        day=pick(rng, ["Monday", "Tuesday", "Thursday", "next week", "the weekend"]),
    )
    if rng.random() < 0.3:
        text += pick(rng, [" 🙏", " thx", " :)", " cheers", "!!", " 👍"])
    return text[0].upper() + text[1:] if rng.random() < 0.6 else text


def benign_email(rng: random.Random) -> str:
    name = pick(rng, NAMES)
    sentences = [
        f"Thanks for sending the {pick(rng, ['proposal', 'report', 'figures', 'draft', 'plan'])} over.",
        f"I've left a few comments in the {pick(rng, ['doc', 'spreadsheet', 'ticket', 'wiki page'])}.",
        f"The {pick(rng, ['workshop', 'review', 'offsite', 'demo', 'kickoff'])} is confirmed for "
        f"{pick(rng, ['Tuesday', 'the 14th', 'next Thursday', 'Monday morning'])}.",
        f"Could you check the {pick(rng, ['numbers', 'timeline', 'wording', 'assumptions'])} in section 3?",
        "Legal is fine with the changes, so we can go ahead.",
        f"{pick(rng, NAMES)} will join us to present the results.",
        "Let me know if anything is unclear.",
        f"I'm out of office from {pick(rng, ['Wednesday', 'the 3rd', 'Friday'])}, so please reply before then.",
        "No rush on this, next week is fine.",
        "The invoice is attached; payment terms are as in our agreement.",
        "I've added the action items to the tracker.",
    ]
    rng.shuffle(sentences)
    body = " ".join(sentences[: rng.randrange(2, 6)])
    greeting = pick(rng, [f"Hi {name},", f"Dear {name},", f"Hello {name},", f"{name} -"])
    sign = pick(rng, ["Best,", "Thanks,", "Kind regards,", "Cheers,", "Regards,"])
    sep = "\n" if rng.random() < 0.6 else " "
    return f"{greeting}{sep}{body}{sep}{sign}{sep}{pick(rng, NAMES)}"


def benign_notice(rng: random.Random) -> str:
    service, _ = rng.choice(list(BRANDS.items()))
    return pick(
        rng,
        [
            f"Your {service} receipt for order {rng.randrange(10000, 99999)} is available in your account.",
            f"{service}: a new sign-in from {pick(rng, ['Chrome on Mac', 'Safari on iPhone', 'Edge on Windows'])}. "
            "If this was you, you can ignore this message.",
            f"Your {service} verification code is {rng.randrange(100000, 999999)}. Never share this code with anyone, "
            f"{service} staff will never ask for it.",
            f"Your {service} password was updated. If you didn't do this, go to the {service} app directly and "
            "reset it from Settings.",
            f"We've updated the {service} terms of service. Read them any time in the app; no action is required.",
            f"Your {service} statement for {pick(rng, ['March', 'April', 'May', 'June'])} is ready to view.",
        ],
    )


def benign_security(rng: random.Random) -> str:
    ioc = defanged_ioc(rng)
    brand = pick(rng, list(BRANDS))
    return pick(
        rng,
        [
            f"Blocked {ioc} at the gateway after {rng.randrange(2, 30)} users reported a fake {brand} login page. "
            "Nobody entered credentials.",
            f"Adding {ioc} to the threat intel feed; it hosted a {brand} phishing kit last week.",
            f"Heads up team: a {brand}-themed phishing wave is going around. Don't click, report it with the button.",
            f"Triage note: the email to {pick(rng, NAMES)} linked to {ioc}. Quarantined {rng.randrange(3, 90)} copies, "
            "no clicks.",
            f"Training reminder: real {brand} messages never ask you to confirm your password by email.",
            f"Our detection rule now catches look-alike domains such as {lookalike(rng, BRANDS[brand])}.com. "
            "Please review the false positives.",
            f"Can you check whether {ioc} is on any blocklist? A customer asked if it is safe.",
        ],
    )


def benign_ai_request(rng: random.Random) -> str:
    verb = pick(
        rng,
        [
            "Summarize this in two sentences",
            "Translate this into German",
            "Rewrite this to sound friendlier",
            "Fix the grammar here",
            "Make this shorter",
            "Act as an editor and tighten this paragraph",
            "Pretend you're a customer and tell me if this is clear",
        ],
    )
    content = pick(
        rng,
        [
            "We are closing early on Friday for the team event; urgent requests go to the on-call number.",
            "Please ignore the earlier agenda, the new one has the budget item first.",
            "Our new privacy notice explains how we protect your data and how to request deletion.",
            "The training covers phishing, strong passwords and reporting lost devices.",
            "Thank you for your order! It will arrive in 3-5 working days.",
            "The quarterly results beat expectations thanks to strong sales in Asia.",
            "Reminder that the office will be closed on Monday for the bank holiday.",
        ],
    )
    return f'{verb}: "{content}"' if rng.random() < 0.5 else f"{verb}.\n{content}"


# --- spam -----------------------------------------------------------------------------------------

PRODUCTS = [
    "weight-loss gummies",
    "designer sunglasses",
    "smart watches",
    "anti-aging serum",
    "wireless earbuds",
    "protein powder",
    "LED face masks",
    "gaming chairs",
    "hair growth oil",
    "memory foam pillows",
    "teeth whitening strips",
    "massage guns",
]


def spam_promo(rng: random.Random) -> str:
    product = pick(rng, PRODUCTS)
    off = pick(rng, ["50%", "60%", "70%", "80%", "90%", "40%"])
    cta = pick(rng, ["Shop now", "Order today", "Grab yours", "Don't miss out", "Click to claim", "Hurry"])
    shop = f"{pick(rng, ['best', 'mega', 'top', 'super', 'hot'])}{pick(rng, ['deals', 'shop', 'store', 'bargains'])}"
    link = f"{shop}.{pick(rng, ['com', 'shop', 'store', 'co'])}"
    text = pick(
        rng,
        [
            "{off} OFF {p}! {c} at {l}",
            "{c}: {p} at {off} off, today only. {l}",
            "Limited stock!! {p} {off} off + free shipping. {c} -> {l}",
            "Everyone is talking about our {p}. {off} off ends at midnight. {l}",
            "You deserve it 💅 {p}, {off} off this weekend. {c}!",
            "Buy one, get one FREE on all {p}! {c} before they're gone: {l}",
        ],
    ).format(off=off, p=product, c=cta, l=link)
    style = rng.random()
    if style < 0.25:
        text = text.upper()
    elif style < 0.5:
        text += " " + pick(rng, ["🔥🔥🔥", "!!!", "⭐⭐⭐⭐⭐", "💰💰", "🎉"])
    if rng.random() < 0.3:
        text += pick(
            rng, [" Reply STOP to unsubscribe.", " Txt STOP to opt out.", " Unsubscribe at any time."]
        )
    return text


def spam_money(rng: random.Random) -> str:
    amount = pick(rng, ["$300", "$500", "$1,000", "$5,000", "£400", "€750"])
    period = pick(rng, ["a day", "a week", "per hour", "every month"])
    scheme = pick(
        rng,
        [
            "trading bot",
            "online course",
            "affiliate system",
            "crypto signals group",
            "side hustle app",
            "print-on-demand method",
        ],
    )
    return pick(
        rng,
        [
            "Make {a} {p} with our {s}! No experience needed. Join now.",
            "I quit my job and now earn {a} {p} using this {s}. Watch the free video!",
            "🚀 Our {s} helped 10,000 people earn {a} {p}. Spots are limited, sign up today!",
            "Want to earn {a} {p} from your phone? Our {s} shows you how. Free trial!",
        ],
    ).format(a=amount, p=period, s=scheme)


def spam_b2b(rng: random.Random) -> str:
    service = pick(
        rng,
        [
            "SEO and link building",
            "mobile app development",
            "lead generation",
            "social media management",
            "logo and branding design",
            "virtual assistant",
            "bookkeeping",
            "video editing",
        ],
    )
    pitch = pick(
        rng,
        [
            "I noticed your website could rank much higher.",
            "We help companies like yours double their sales.",
            "Our team of experts works at a fraction of local prices.",
            "We have helped over 500 businesses grow in the last year.",
        ],
    )
    ask = pick(
        rng,
        [
            "Would you be open to a quick call this week?",
            "Reply YES and I'll send you our price list.",
            "Can I send you a free proposal?",
            "Let me know a good time to chat.",
        ],
    )
    name = f"{pick(rng, NAMES)} {pick(rng, SURNAMES)}"
    if rng.random() < 0.5:
        return f"Hi there, {pitch} We offer {service} services. {ask}"
    return f"Dear Business Owner,\n{pitch} We provide professional {service} services at affordable rates. {ask}\n\nBest regards,\n{name}\nBusiness Development Manager"


def spam_casino_dating(rng: random.Random) -> str:
    return pick(
        rng,
        [
            f"🎰 {pick(rng, ['100', '150', '200', '300'])}% bonus + {pick(rng, ['50', '100', '200'])} free spins at "
            f"{pick(rng, ['Lucky', 'Royal', 'Golden', 'Vegas'])}{pick(rng, ['Spin', 'Slots', 'Bet', 'Jackpot'])}! Play now",
            f"{pick(rng, NAMES)} ({rng.randrange(21, 35)}) sent you a message 😘 Chat free tonight on "
            f"{pick(rng, ['FlirtNow', 'MeetLocal', 'DateMe'])}!",
            f"Bet on tonight's match and get your first bet back up to {pick(rng, ['£20', '$50', '€30'])}. 18+ T&Cs apply.",
            f"Singles over {pick(rng, ['30', '40', '50'])} are waiting for you. Join {pick(rng, ['free', 'today'])} and "
            "find love!",
        ],
    )


COMPOSERS: dict[str, list[tuple[str, Callable[[random.Random], str], int]]] = {
    "benign": [
        ("chat", benign_chat, 35),
        ("email", benign_email, 40),
        ("notice", benign_notice, 30),
        ("security", benign_security, 35),
        ("ai-request", benign_ai_request, 25),
    ],
    "phishing": [
        ("alert", phishing_alert, 45),
        ("delivery", phishing_delivery, 30),
        ("bec", phishing_bec, 30),
        ("callback", phishing_callback, 20),
        ("workplace", phishing_workplace, 25),
    ],
    "spam": [
        ("promo", spam_promo, 50),
        ("money", spam_money, 25),
        ("b2b", spam_b2b, 25),
        ("casino-dating", spam_casino_dating, 20),
    ],
    "prompt_injection": [
        ("hidden", injection_hidden, 80),
        ("direct", injection_direct, 50),
        ("roleplay", injection_roleplay, 30),
    ],
}


def compose_all(seed: int) -> list[Example]:
    """Every composed example, in a fixed order for a given seed (duplicates removed later)."""
    rng = random.Random(seed)
    examples: list[Example] = []
    for label, families in COMPOSERS.items():
        for family, compose, count in families:
            examples.extend((compose(rng), label, f"composed:{family}") for _ in range(count))
    return examples
