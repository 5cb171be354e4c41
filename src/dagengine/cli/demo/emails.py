"""The test emails: templates of four kinds, drawn in a reproducible mix."""

from __future__ import annotations

import random

from ...types import Section
from .settings import DEFAULT_SEED

__all__ = ["EMAIL_TYPES", "generate_emails"]

EMAIL_TYPES = ("work", "newsletter", "personal", "spam")
_TYPE_WEIGHTS = (0.35, 0.25, 0.15, 0.25)

# (subject, body) templates; {slots} are filled from _WORDS. Each reads like its kind, and
# none uses words that a classifier prompt's own instructions would mask.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "work": (
        ("{project} project: deadline moved to {day}",
         "Hi {name},\n\nThe client asked us to move the {project} deadline to {day}. Can you "
         "update the project schedule and share the revised report before our team meeting "
         "at {time}? The budget stays the same.\n\nThanks,\n{sender}"),
        ("{quarter} report draft attached",
         "Hi team,\n\nAttached is the draft of the {quarter} quarterly report. Please review "
         "the KPI slides before the board presentation on {day}. Comments by {time} would "
         "help me finish the deliverable.\n\nBest,\n{sender}"),
        ("Agenda for {day}'s standup",
         "Morning {name},\n\nFor tomorrow's standup: sprint review, the {project} release "
         "milestone and the open invoice from the client. The manager wants the roadmap "
         "update in the meeting notes.\n\n{sender}"),
        ("Interview schedule for the analyst role",
         "Hi {name},\n\nHiring update: three interviews are on the schedule for {day} at "
         "{time}. Please review the candidates' work samples before the meeting and send "
         "your notes to the hiring manager.\n\nRegards,\n{sender}"),
        ("Contract proposal for {project}",
         "Hello {name},\n\nThe customer signed off on the proposal. Legal needs the final "
         "contract and the budget breakdown by {day}; the stakeholder review is on the "
         "schedule for {time}.\n\nThanks,\n{sender}"),
        ("Onboarding plan for the new colleague",
         "Hi {name},\n\n{other} joins the team on {day}. Could you prepare the onboarding "
         "agenda, book a meeting room in the office, and add the {project} project to their "
         "first sprint?\n\nCheers,\n{sender}"),
    ),
    "newsletter": (
        ("{publication} #{number}: {area}",
         "This week in {publication}, edition #{number}: five articles on {area}, curated "
         "for our subscribers. Read the highlights below.\n\nYou are receiving this "
         "newsletter because you subscribed. Unsubscribe or update preferences anytime."),
        ("Your monthly roundup from {publication}",
         "Welcome to the monthly roundup! The most read articles this month cover {area} "
         "and more.\n\nManage your subscription preferences or unsubscribe with one link."),
        ("The {publication} weekly digest",
         "Your weekly digest is here: curated articles about {area}, community highlights "
         "and new reads.\n\nThis newsletter goes to {subscribers} subscribers. "
         "Unsubscribe at any time."),
        ("Bulletin: new on {area}",
         "{publication} bulletin, issue {number}. Highlights: three long reads on {area} and "
         "our editors' curated picks.\n\nNot interested? Unsubscribe from this newsletter."),
        ("Edition {number} is out",
         "Hello subscriber, edition {number} of {publication} is ready to read. Inside: "
         "{area}, reader highlights and the monthly articles archive.\n\nUpdate your "
         "preferences or unsubscribe."),
    ),
    "personal": (
        ("Dinner this weekend?",
         "Hi honey,\n\n{relative} is cooking {food} this weekend and the whole family is "
         "coming. Can you bring the kids for dinner on Saturday? We miss you!\n\nLove,\n"
         "{sender}"),
        ("Happy birthday!!",
         "Happy birthday, {name}! Hope you have a wonderful day. Let's catch up over brunch "
         "this weekend, my treat. Big hug from all of us.\n\nxoxo\n{sender}"),
        ("Trip to {place}",
         "Hey {name},\n\nWe booked the family vacation to {place}! {relative} and the kids "
         "are so excited. Want to visit us there for a weekend? Miss you lots.\n\n{sender}"),
        ("Photos from the wedding",
         "Hi sweetie,\n\nHere are the photos from your cousin's wedding party. Grandma loved "
         "them! Come visit for a family dinner soon, we miss you.\n\nLove, {sender}"),
        ("Movie night?",
         "Hey {name}! Movie night at my place on Friday with pizza? Bring your brother and "
         "your sister too. Would love to catch up before the holiday.\n\n{sender}"),
    ),
    "spam": (
        ("CONGRATULATIONS! You WON {amount}",
         "Dear winner, you have been selected in our international lottery! Claim your "
         "{amount} cash prize now. Click here and verify your details to receive your "
         "reward. This exclusive offer is limited to {hours} hours, act now! Ref: {ref}"),
        ("URGENT: your account is suspended",
         "URGENT notice from {brand}: your account is suspended. Click the link and verify "
         "your password within {hours} hours to claim your free bonus and avoid losing access. "
         "Act now! Case {ref}"),
        ("Guaranteed {crypto} profits!!!",
         "Make $$$ fast! Our guaranteed {crypto} system doubles your cash in a week. Free "
         "bonus for the first {spots} selected members only. Click now, this exclusive deal is "
         "limited!"),
        ("Inheritance claim: {amount}",
         "Dear friend, I am a lawyer contacting you about an unclaimed inheritance of "
         "{amount}. Claim the cash by wire transfer: click to verify, it is guaranteed and "
         "urgent. Reply with your password to receive the million dollar reward.\n\n"
         "Barrister {name} {surname}, file {ref}"),
        ("FREE spins at {brand}",
         "You are a WINNER! Get {spots} free spins and a guaranteed casino bonus. Click to "
         "claim your prize within {hours} hours. Exclusive discount, limited offer, act now!"),
    ),
}
_WORDS: dict[str, tuple[str, ...]] = {
    "name": ("Alice", "Ben", "Chloe", "Dan", "Elena", "Farid", "Grace", "Hiro", "Ines",
             "Jonas", "Kara", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa"),
    "project": ("Atlas", "Beacon", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite",
                "Helix", "Orion", "Zephyr"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "time": ("9:30", "10:00", "11:15", "1:00", "2:30", "3:00", "4:45"),
    "quarter": ("Q1", "Q2", "Q3", "Q4"),
    "publication": ("The Morning Byte", "Data Engineering Digest", "Frontend Focus",
                    "The Product Letter", "Cloud Native Notes", "Python Weekly",
                    "Design Matters", "The Growth Memo"),
    "area": ("serverless databases", "vector search", "CSS container queries",
             "pricing pages", "Kubernetes upgrades", "async Python", "onboarding emails",
             "dark mode palettes"),
    "food": ("lasagna", "tacos", "pizza", "curry", "pancakes", "barbecue"),
    "place": ("the lake house", "Lisbon", "the beach", "Grandma's place", "the mountains",
              "Barcelona"),
    "relative": ("Mom", "Dad", "Aunt Sue", "Uncle Pete", "Grandma", "your sister",
                 "your brother"),
    "amount": ("$5,000,000", "$850,000", "$1,250,000", "$2,400,000", "$7,500"),
    "crypto": ("Bitcoin", "crypto", "Ethereum"),
    "brand": ("PayPa1", "Amaz0n Rewards", "Netfl1x Billing", "Apple ID Center",
              "W1nBig Casino"),
    "surname": ("Okafor", "Smith", "Mensah", "Williams", "Adeyemi", "Brown"),
    "hours": ("12", "24", "48", "72"),
}


def generate_emails(count: int, seed: int = DEFAULT_SEED) -> list[Section]:
    """`count` varied emails; metadata carries the `type` each was written as and its subject.

    The mix depends on `seed` alone (the texts come from a second stream), so the same seed
    gives the same types for any template changes.
    """
    kinds = random.Random(seed).choices(EMAIL_TYPES, _TYPE_WEIGHTS, k=count)
    rng = random.Random(f"email-texts:{seed}")
    emails = []
    for kind in kinds:
        subject, body = rng.choice(_TEMPLATES[kind])
        slots = {slot: rng.choice(words) for slot, words in _WORDS.items()}
        slots.update(sender=rng.choice(_WORDS["name"]), other=rng.choice(_WORDS["name"]),
                     number=str(rng.randint(12, 480)), spots=str(rng.randint(5, 50) * 10),
                     subscribers=f"{rng.randint(2, 90) * 1000:,}",
                     ref=f"{rng.choice('ABCDEFGHJKMNPRSTUVWXYZ')}-{rng.randint(10000, 99999)}")
        subject = subject.format(**slots)
        emails.append(Section(content=f"Subject: {subject}\n\n{body.format(**slots)}",
                              metadata={"type": kind, "subject": subject}))
    return emails
