#!/usr/bin/env python3
"""Generate the small, self-made sample corpus used by ``make demo``.

Everything is drawn or written by this script (no network, nothing copied): three born-digital
PDFs, one image-only ("scanned") PDF, three images and a README. Output is deterministic: the same
pymupdf / Pillow / font versions produce the same bytes on every run. All content is fictional or
general knowledge, generated content, CC0.

Usage::

    python scripts/make_sample_corpus.py [OUT_DIR]     # default: sample_corpus/
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw, ImageFont

# --------------------------------------------------------------------------------------------------
# File names (also used by tests and by scripts/sample_queries.txt)
# --------------------------------------------------------------------------------------------------
REEF_PDF = "coral_reef_fish_field_guide.pdf"
BIKE_PDF = "bicycle_maintenance_manual.pdf"
COFFEE_PDF = "northwind_roasters_q3_2024_report.pdf"
SCAN_PDF = "cormorant_head_lighthouse_scan.pdf"
DIAGRAM_PNG = "ingestion_pipeline_diagram.png"
PHOTO_JPG = "sunset_landscape.jpg"
SIGN_JPG = "harbor_market_sign_exif_rotated.jpg"
README = "README.txt"

#: Every file the generator writes, in the order it writes them.
ALL_FILES: tuple[str, ...] = (REEF_PDF, BIKE_PDF, COFFEE_PDF, SCAN_PDF, DIAGRAM_PNG, PHOTO_JPG, SIGN_JPG, README)
#: Expected page counts of the PDFs.
PDF_PAGES: dict[str, int] = {REEF_PDF: 3, BIKE_PDF: 3, COFFEE_PDF: 3, SCAN_PDF: 2}

EXIF_ORIENTATION_TAG = 0x0112
FIXED_PDF_DATE = "D:20241001120000+00'00'"  # fixed so PDFs are byte-identical across runs

PAGE_W, PAGE_H = 612.0, 792.0  # US Letter, points
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 66.0, 64.0, 64.0

# --------------------------------------------------------------------------------------------------
# Fonts for Pillow
# --------------------------------------------------------------------------------------------------
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
_FONT_NAMES = {
    "serif": ("DejaVuSerif.ttf", "LiberationSerif-Regular.ttf", "FreeSerif.ttf"),
    "serif-bold": ("DejaVuSerif-Bold.ttf", "LiberationSerif-Bold.ttf", "FreeSerifBold.ttf"),
    "sans": ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "FreeSans.ttf", "arial.ttf"),
    "sans-bold": ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "FreeSansBold.ttf", "arialbd.ttf"),
}
_font_path_cache: dict[str, Path | None] = {}


def _find_font_file(style: str) -> Path | None:
    """Return the first installed TrueType file for ``style`` (serif, sans, ...), or None."""
    if style not in _font_path_cache:
        found: Path | None = None
        for name in _FONT_NAMES[style]:
            for root in _FONT_DIRS:
                base = Path(root)
                if not base.is_dir():
                    continue
                hits = sorted(base.rglob(name))
                if hits:
                    found = hits[0]
                    break
            if found:
                break
        _font_path_cache[style] = found
    return _font_path_cache[style]


def load_font(style: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A Pillow font of ``size`` px: a system TrueType font, else Pillow's built-in default."""
    path = _find_font_file(style)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float) -> list[str]:
    """Greedy word wrap of ``text`` so that each line fits ``max_width`` pixels."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def _png_bytes(img: Image.Image, optimize: bool = True) -> bytes:
    """Encode ``img`` as PNG (deterministic: no metadata chunks)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Born-digital PDFs: a tiny block layout engine on top of insert_textbox
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One vertical block on a page: styled text, or an image with a height in points."""

    style: str  # title | subtitle | h | p | bullet | table | caption | image
    text: str = ""
    image: bytes | None = None
    height: float = 0.0


# style -> (fontname, fontsize, space after in points, left indent)
_STYLES: dict[str, tuple[str, float, float, float]] = {
    "title": ("hebo", 19.0, 4.0, 0.0),
    "subtitle": ("heit", 10.5, 16.0, 0.0),
    "h": ("hebo", 13.0, 6.0, 0.0),
    "p": ("tiro", 11.0, 8.0, 0.0),
    "bullet": ("tiro", 11.0, 4.0, 14.0),
    "table": ("cour", 9.0, 10.0, 6.0),
    "caption": ("tiit", 9.5, 10.0, 0.0),
}


def _layout_page(page: pymupdf.Page, blocks: Sequence[Block], footer: str) -> None:
    """Write ``blocks`` top to bottom on ``page``; raise if anything does not fit."""
    x0, x1 = MARGIN_X, PAGE_W - MARGIN_X
    bottom = PAGE_H - MARGIN_BOTTOM
    y = MARGIN_TOP
    for block in blocks:
        if block.style == "image":
            assert block.image is not None
            with Image.open(io.BytesIO(block.image)) as im:
                aspect = im.width / im.height
            w = min(x1 - x0, block.height * aspect)
            left = (x0 + x1 - w) / 2
            rect = pymupdf.Rect(left, y, left + w, y + block.height)
            if rect.y1 > bottom:
                raise ValueError(f"image does not fit on page {page.number}")
            page.insert_image(rect, stream=block.image)
            y = rect.y1 + 6.0
            continue
        fontname, size, after, indent = _STYLES[block.style]
        text = block.text
        left = x0 + indent
        if block.style == "bullet":
            page.insert_text((x0 + 3, y + size * 0.95), "-", fontname=fontname, fontsize=size)
        rect = pymupdf.Rect(left, y, x1, bottom)
        remaining = page.insert_textbox(rect, text, fontname=fontname, fontsize=size, align=0)
        if remaining < 0:
            raise ValueError(f"text does not fit on page {page.number}: {text[:40]!r}")
        y += rect.height - remaining + after
    page.insert_text((x0, PAGE_H - 36), footer, fontname="helv", fontsize=8, color=(0.35, 0.35, 0.35))
    num = f"Page {page.number + 1}"
    width = pymupdf.get_text_length(num, fontname="helv", fontsize=8)
    page.insert_text((x1 - width, PAGE_H - 36), num, fontname="helv", fontsize=8, color=(0.35, 0.35, 0.35))


def _new_pdf(title: str, subject: str) -> pymupdf.Document:
    """An empty PDF with fixed metadata (so saved bytes do not depend on the clock)."""
    doc = pymupdf.open()
    doc.set_metadata(
        {
            "title": title,
            "author": "mmrag sample corpus generator",
            "subject": subject,
            "keywords": "mmrag, sample corpus, generated content, CC0",
            "creator": "scripts/make_sample_corpus.py",
            "producer": "PyMuPDF",
            "creationDate": FIXED_PDF_DATE,
            "modDate": FIXED_PDF_DATE,
        }
    )
    return doc


def _save_pdf(doc: pymupdf.Document, path: Path) -> None:
    """Save compactly and reproducibly."""
    doc.save(str(path), garbage=4, deflate=True, no_new_id=True)
    doc.close()


def _write_text_pdf(path: Path, title: str, subject: str, pages: Sequence[Sequence[Block]]) -> None:
    """Create a born-digital PDF with one page per block list."""
    doc = _new_pdf(title, subject)
    for blocks in pages:
        page = doc.new_page(width=PAGE_W, height=PAGE_H)
        _layout_page(page, blocks, footer=title)
    _save_pdf(doc, path)


def _p(*paras: str) -> list[Block]:
    """Paragraph blocks."""
    return [Block("p", t) for t in paras]


def _bullets(*items: str) -> list[Block]:
    """Bullet-list blocks."""
    return [Block("bullet", t) for t in items]


# ---- (a) coral reef fish field guide ------------------------------------------------------------
def _reef_pages() -> list[list[Block]]:
    """Three pages of a short field guide to coral reef fish."""
    p0 = [
        Block("title", "A Pocket Field Guide to Coral Reef Fish"),
        Block("subtitle", "For snorkelers and beginning divers. Part 1: Reading the reef"),
        *_p(
            "Coral reefs cover far less than one percent of the ocean floor, yet a large share of all "
            "marine fish species depend on them at some stage of their lives. For a first-time "
            "snorkeler this abundance can be overwhelming: dozens of species may pass through the "
            "view of a single mask within a minute. This guide groups the fish you are most likely "
            "to meet by body shape and behaviour, so that you can put a name to what you see without "
            "memorising hundreds of species.",
        ),
        Block("h", "Reef zones"),
        *_p(
            "Most fringing reefs can be read as three zones. The reef flat is the shallow, sunlit "
            "platform closest to shore, where small damselfish guard their private gardens of algae "
            "and chase away much larger visitors. The reef crest is where the waves break; schools of "
            "surgeonfish graze here in the surge. Beyond the crest the fore-reef slope drops into "
            "deeper, bluer water, and this is where larger predators such as groupers and snappers "
            "patrol the edges of the coral.",
        ),
        Block("h", "How to watch fish"),
        *_p(
            "Move slowly and float horizontally so that your fins stay well above the coral. Instead "
            "of chasing fish, pick one coral head and watch it for five minutes: many animals that "
            "hide when you arrive come back out once you stop moving. The light is best from mid "
            "morning to early afternoon, when the sun is high enough to reach into the crevices. An "
            "underwater slate is useful for noting colour patterns, the shape of the tail and what "
            "the fish was doing.",
            "Body shape is the quickest clue to a fish's way of life. Flat, disc-shaped bodies, as in "
            "butterflyfish and angelfish, are built for turning tightly between coral branches. "
            "Torpedo shapes belong to fast open-water swimmers such as jacks and barracuda, while "
            "long, thin fish like the trumpetfish are ambush hunters that hang motionless and wait.",
        ),
    ]
    p1 = [
        Block("h", "Part 2: Parrotfish, clownfish and cleaner wrasse"),
        *_p(
            "Parrotfish are named for their teeth, which are fused into a hard beak. They scrape "
            "algae off dead coral and rock, and a second set of teeth in the throat grinds the "
            "swallowed limestone into a fine powder. What leaves the fish is clean white sand: a "
            "single large parrotfish can produce hundreds of kilograms of sand in a year, and much "
            "of the sand on tropical beaches has passed through one. You can often hear them before "
            "you see them, as a steady crunching on the reef.",
            "Many parrotfish change colour and sex as they grow. Young fish in the drab initial "
            "phase are mostly female; the largest individuals become brilliantly coloured "
            "terminal-phase males. At night some species sleep wedged into a crevice inside a "
            "transparent cocoon of mucus that they secrete from their gills. The cocoon is thought "
            "to mask their scent from night hunters such as moray eels and to keep parasites away.",
            "Clownfish live among the stinging tentacles of sea anemones, protected by a layer of "
            "mucus on their skin. Each anemone hosts a small group ruled by size: the largest fish "
            "is the breeding female and the second largest is the breeding male. If the female dies, "
            "the male changes sex and takes her place, and the largest juvenile becomes the new "
            "male. Never touch an anemone; a stressed anemone can shrink and expose its residents.",
            "Cleaner wrasse are small, slender fish with a black stripe along a blue body. They "
            "run cleaning stations at fixed spots on the reef, where larger fish, even predators, "
            "queue up and hold still while the wrasse pick parasites and dead skin from their "
            "bodies, gills and mouths. A fish that opens its mouth wide and hangs at an odd angle "
            "near a coral head is usually waiting for a cleaner.",
        ),
    ]
    p2 = [
        Block("h", "Part 3: Butterflyfish, groupers and reef etiquette"),
        *_p(
            "Butterflyfish are small, brightly patterned and usually seen in pairs; in many species "
            "the same two fish stay together for years and defend a shared territory. A dark band "
            "through the eye and, in some species, a false eyespot near the tail confuse predators "
            "about which end of the fish is the head. Many butterflyfish feed on coral polyps, so "
            "surveys use their numbers as a simple indicator of how healthy a reef is.",
            "Groupers are heavy-bodied ambush predators that rest under ledges and strike with a "
            "sudden gulp. Most species start life as females and become males later, and many "
            "gather in large spawning aggregations at the same place and moon phase each year, "
            "which makes them easy targets for fishing. Because they grow slowly and mature late, "
            "groupers are among the first fish to disappear from an overfished reef.",
        ),
        Block("h", "Reef etiquette"),
        *_bullets(
            "Do not touch, stand on or kick coral; a single fin stroke can break decades of growth.",
            "Use mineral sunscreen or a long-sleeved rash guard instead of chemical sunscreen.",
            "Do not feed the fish: it changes their behaviour and can make them aggressive.",
            "Keep at least two metres away from turtles, rays and sharks, and never block their path.",
            "Take nothing but photographs, and report unusual sightings to a citizen-science survey.",
        ),
        *_p(
            "Following these simple rules keeps reefs healthy for the fish and for the next visitor. "
            "Enjoy your time in the water, and take this guide with you on your next snorkel trip."
        ),
    ]
    return [p0, p1, p2]


# ---- (b) bicycle maintenance manual -------------------------------------------------------------
def _bike_pages() -> list[list[Block]]:
    """Three pages of a home mechanic's bicycle maintenance manual, with text tables."""
    pressure_table = "\n".join(
        [
            "Bicycle type       Tire width     Pressure (psi)   Pressure (bar)",
            "-----------------  -------------  ---------------  --------------",
            "Road               25-28 mm       80-100           5.5-6.9",
            "Gravel             35-45 mm       35-50            2.4-3.4",
            "Hybrid / city      35-47 mm       50-70            3.4-4.8",
            "Mountain (MTB)     2.2-2.6 in     22-30            1.5-2.1",
            "Children's bike    1.75-2.1 in    30-40            2.1-2.8",
        ]
    )
    schedule_table = "\n".join(
        [
            "Interval         Task",
            "---------------  ----------------------------------------------------",
            "Every ride       ABC quick check, tire pressure",
            "Weekly           Wipe and lubricate the chain, look at the brake pads",
            "Monthly          Measure chain wear, check bolts and cable tension",
            "Every 6 months   Inspect hub and headset bearings, true the wheels",
            "Yearly           Full service: new cables, bleed hydraulic brakes",
        ]
    )
    p0 = [
        Block("title", "Bicycle Maintenance Manual"),
        Block("subtitle", "Home mechanic edition. Chapter 1: Tools and the pre-ride check"),
        *_p(
            "A well-maintained bicycle is safer, quieter and noticeably faster than a neglected "
            "one, and most routine work needs nothing more than a few hand tools and twenty minutes "
            "on a Sunday afternoon. This manual covers the jobs a home mechanic can do with "
            "confidence: tire care, cleaning and lubricating the chain, adjusting brakes and "
            "following a simple maintenance schedule. Jobs such as facing a frame or pressing in "
            "bearings are best left to a bicycle shop.",
        ),
        Block("h", "The basic tool kit"),
        *_bullets(
            "A set of hex keys from 2 to 8 mm, plus a T25 Torx key for disc brake rotors.",
            "Two plastic tire levers and a spare inner tube or a tubeless repair kit.",
            "A floor pump with a pressure gauge that reads both psi and bar.",
            "Chain lubricant, a degreaser, clean rags and an old toothbrush.",
            "A chain wear checker; optionally a torque wrench for carbon parts.",
        ),
        Block("h", "The ABC quick check"),
        *_p(
            "Before every ride, spend one minute on the ABC check. A is for air: squeeze both "
            "tires and top them up to the pressure printed on the sidewall. B is for brakes: pull "
            "each lever firmly; it should stop well before it touches the handlebar, and the bike "
            "should not roll forward when you push it. C is for chain and cranks: spin the pedals "
            "backwards and listen for squeaks, then wiggle the cranks sideways to feel for play in "
            "the bottom bracket.",
            "Finish by checking that both wheel quick releases or thru-axles are closed tight and "
            "that the handlebar does not turn independently of the front wheel. Never ride a bike "
            "with an open quick release: the wheel can fall out under braking.",
        ),
    ]
    p1 = [
        Block("h", "Chapter 2: Tires and the drivetrain"),
        *_p(
            "Correct tire pressure is the cheapest performance upgrade there is. Too little air "
            "makes the bike sluggish and invites pinch flats, where the tube is snapped between the "
            "rim and a sharp edge; too much makes it skittish on rough roads. Wider tires need less "
            "pressure, and heavier riders should stay towards the upper end of each range. The "
            "table below gives typical starting points; always stay within the limits printed on "
            "the tire and the rim.",
        ),
        Block("table", "Table 1. Recommended tire pressure by bicycle type\n\n" + pressure_table),
        Block("h", "Cleaning and lubricating the chain"),
        *_p(
            "Shift onto the smallest rear cog, hold a rag around the lower run of the chain and "
            "backpedal for thirty seconds to wipe off old grime. For a very dirty chain, scrub it "
            "with degreaser and a brush, rinse, and let it dry completely. Then apply one drop of "
            "lubricant to each roller on the inside of the chain while slowly turning the cranks "
            "backwards. Wait five minutes for the lube to soak in and wipe off all the excess: oil "
            "on the outside of the chain only collects dirt.",
            "Chains stretch as their pins and rollers wear, and a worn chain quickly wears out the "
            "much more expensive cassette and chainrings. Measure the chain every month with a "
            "wear checker and replace it at 0.5 percent elongation on 11- and 12-speed drivetrains, "
            "or at 0.75 percent on drivetrains with fewer speeds.",
        ),
    ]
    p2 = [
        Block("h", "Chapter 3: Brakes and the maintenance schedule"),
        Block("h", "Rim brakes"),
        *_p(
            "Rim brake pads should hit the braking surface squarely, never touching the tire and "
            "never hanging below the rim. If the brakes squeal, loosen the pad bolt and toe the pad "
            "in, so that its front edge touches the rim about one millimetre before its rear edge; "
            "a folded business card between the rear of the pad and the rim makes a handy spacer. "
            "Replace the pads once their wear grooves have disappeared, and adjust the cable barrel "
            "adjuster so that the lever stops about two finger widths from the handlebar.",
        ),
        Block("h", "Disc brakes"),
        *_p(
            "Keep oil and lubricant well away from disc rotors and pads; even a fingerprint can "
            "make them squeal and lose power. Contaminated pads should be replaced, and the rotor "
            "cleaned with isopropyl alcohol. New pads must be bedded in: ride at moderate speed and "
            "brake firmly to walking pace ten to twenty times, without locking the wheel. Replace "
            "the pads when the friction material is thinner than about half a millimetre.",
        ),
        Block("h", "Maintenance schedule"),
        Block("table", "Table 2. Maintenance intervals for a bike ridden a few times a week\n\n" + schedule_table),
        *_p(
            "Keep a note of when each job was done. A bike ridden daily in rain or on gravel needs "
            "the weekly and monthly jobs roughly twice as often."
        ),
    ]
    return [p0, p1, p2]


# ---- (c) Northwind Roasters quarterly report ----------------------------------------------------
#: Quarterly revenue in thousands of US dollars, shown in the report's figure.
QUARTERLY_REVENUE_K: tuple[tuple[str, int], ...] = (
    ("Q3 2023", 4250),
    ("Q4 2023", 4410),
    ("Q1 2024", 4120),
    ("Q2 2024", 4580),
    ("Q3 2024", 4950),
)


def _revenue_chart_png() -> bytes:
    """A bar chart of Northwind Roasters' quarterly revenue (800x500 px PNG)."""
    w, h = 800, 500
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    title_font = load_font("sans-bold", 26)
    font = load_font("sans", 18)
    small = load_font("sans", 16)
    d.text((w / 2, 24), "Northwind Roasters - quarterly revenue", font=title_font, fill="black", anchor="mt")
    left, right, top, base = 100, w - 40, 80, h - 70
    vmax = 5600  # headroom above the tallest bar for its value label
    for v in range(0, 5001, 1000):
        yy = base - (base - top) * v / vmax
        d.line([(left, yy), (right, yy)], fill=(215, 215, 215), width=1)
        d.text((left - 10, yy), f"{v:,}", font=small, fill=(60, 60, 60), anchor="rm")
    d.text((22, (top + base) / 2), "USD k", font=small, fill=(60, 60, 60), anchor="mm")
    n = len(QUARTERLY_REVENUE_K)
    slot = (right - left) / n
    bar_w = slot * 0.58
    for i, (label, value) in enumerate(QUARTERLY_REVENUE_K):
        cx = left + slot * (i + 0.5)
        yy = base - (base - top) * value / vmax
        color = (122, 72, 38) if i == n - 1 else (191, 145, 100)
        d.rectangle([cx - bar_w / 2, yy, cx + bar_w / 2, base], fill=color, outline=(70, 40, 20))
        d.text((cx, yy - 6), f"{value:,}", font=font, fill="black", anchor="md")
        d.text((cx, base + 12), label, font=font, fill="black", anchor="mt")
    d.line([(left, base), (right, base)], fill="black", width=2)
    d.line([(left, base - (base - top) * 5000 / vmax), (left, base)], fill="black", width=2)
    return _png_bytes(img)


def _coffee_pages() -> list[list[Block]]:
    """Three pages of a fictional coffee company's quarterly report, with a raster figure."""
    segment_table = "\n".join(
        [
            "Segment (USD thousands)     Q3 2024    Q3 2023    Change",
            "--------------------------  ---------  ---------  -------",
            "Wholesale coffee beans          2,140      1,880   +13.8%",
            "Cafes (7 locations)             1,615      1,420   +13.7%",
            "Online subscriptions              905        640   +41.4%",
            "Equipment and merchandise         290        310    -6.5%",
            "--------------------------  ---------  ---------  -------",
            "Total revenue                   4,950      4,250   +16.5%",
        ]
    )
    p0 = [
        Block("title", "Northwind Roasters"),
        Block("subtitle", "Quarterly report for the third quarter of 2024 (July to September)"),
        Block("h", "Letter to our shareholders"),
        *_p(
            "Dear shareholders, the third quarter was the busiest in the eleven-year history of "
            "Northwind Roasters. Our new roastery in Port Alder reached full production in August, "
            "doubling our roasting capacity and allowing us to bring all wholesale roasting in "
            "house. We opened two new cafes, on Harbor Street and in Elm Square, bringing our "
            "network to seven locations, and both were profitable in their first full month.",
            "Our seasonal single-origin coffee from the Guji zone of Ethiopia sold out in nineteen "
            "days, and the relaunched subscription app now lets customers change grind size, "
            "delivery dates and origins with a single tap. I would like to thank our roasters, "
            "baristas and delivery drivers, who handled record volumes while keeping our quality "
            "scores at their highest level to date.",
        ),
        Block("h", "Highlights of the quarter"),
        *_bullets(
            "Port Alder roastery fully operational; capacity raised to 40 tonnes of coffee per month.",
            "Two new cafes opened; the network now has seven cafes.",
            "Subscription customers passed 9,000 for the first time.",
            "Barista training academy certified 46 new baristas.",
            "A new compostable packaging line replaced plastic bags for all retail coffee.",
        ),
        *_p("Maria Lindqvist, Chief Executive Officer, Northwind Roasters"),
    ]
    p1 = [
        Block("h", "Financial results for the third quarter of 2024"),
        *_p(
            "Total revenue for the third quarter of 2024 was 4.95 million US dollars, an increase "
            "of 16.5 percent from 4.25 million dollars in the third quarter of 2023. Growth came "
            "from every segment except equipment and merchandise. Online subscriptions were the "
            "fastest growing segment, up 41.4 percent, while wholesale coffee beans remained the "
            "largest source of revenue. Gross margin improved to 38.2 percent from 36.9 percent a "
            "year earlier, and operating income was 412 thousand dollars.",
        ),
        Block("table", "Table 1. Revenue by segment\n\n" + segment_table),
        Block("image", image=_revenue_chart_png(), height=250.0),
        Block(
            "caption",
            "Figure 1. Northwind Roasters quarterly revenue from Q3 2023 to Q3 2024, in thousands of "
            "US dollars. The third quarter of 2024 was the highest quarter on record.",
        ),
    ]
    p2 = [
        Block("h", "Outlook, sustainability and risks"),
        Block("h", "Outlook for the fourth quarter"),
        *_p(
            "The fourth quarter is traditionally our strongest season thanks to holiday gift boxes "
            "and corporate orders. With the Port Alder roastery at full capacity and two additional "
            "cafes open for the whole quarter, we expect continued growth and will report results "
            "in January. We plan to open one more cafe in the spring of 2025.",
        ),
        Block("h", "Sustainability"),
        *_p(
            "Forty-two percent of the green coffee we bought this quarter came through direct-trade "
            "relationships with farms and cooperatives in Ethiopia, Colombia and Guatemala, up from "
            "thirty-five percent a year ago. Our new compostable packaging removes about three "
            "tonnes of plastic per year, and the roastery's afterburner now recovers heat to warm "
            "the building in winter.",
        ),
        Block("h", "Risks"),
        *_p(
            "Green coffee prices rose sharply during the quarter after poor harvests in Brazil and "
            "Vietnam. We have fixed prices for about sixty percent of the coffee we need for the "
            "next two quarters, but further increases would reduce our gross margin. Other risks "
            "include shipping delays, rising wages in our cafes and competition from supermarket "
            "private labels. We will raise retail prices modestly in November if costs keep rising.",
        ),
        *_p(
            "This report has not been audited. Northwind Roasters and all persons and places named "
            "in it are fictional."
        ),
    ]
    return [p0, p1, p2]


# --------------------------------------------------------------------------------------------------
# Image-only ("scanned") PDF
# --------------------------------------------------------------------------------------------------
SCAN_W, SCAN_H = 1700, 2200  # 8.5 x 11 in at 200 dpi

_LIGHTHOUSE_PAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "The Lighthouse at Cormorant Head: A Short History",
        (
            "Cormorant Head is a granite headland at the mouth of a busy fishing harbour, and for "
            "most of the nineteenth century it was one of the most feared places on the coast. "
            "Fog rolls in on summer afternoons, and a line of reefs runs almost a mile out to sea.",
            "After the schooner Mary Ellen was lost on the reefs in the winter of 1866 with all "
            "eleven of her crew, the merchants of the town raised money for a light. Work on a "
            "round granite tower began in 1869, and the lamp was lit for the first time on the "
            "evening of the fifteenth of October 1871.",
            "The first lamp burned whale oil and later kerosene. Two keepers and their families "
            "lived in a stone cottage beside the tower. They carried fuel up one hundred and "
            "twelve steps every evening, trimmed the wicks at midnight and polished the brass and "
            "glass each morning.",
            "The keepers also kept a logbook. Its entries record the weather four times a day, "
            "every ship that passed in daylight and, in the storm of January 1877, the rescue of "
            "six fishermen whose boat was driven onto the rocks below the tower.",
        ),
    ),
    (
        "Fog Signals, Electricity and Automation",
        (
            "A steam fog whistle was added in 1889. In thick weather it sounded two long blasts "
            "every minute, and the keepers often had to stoke its boiler for days without rest.",
            "Electric light reached the headland in 1931, and a cable from the town replaced the "
            "kerosene lamp. The new light could be seen twenty miles out to sea.",
            "The station was automated in 1978, and the last keeper, Thomas Avery, left the "
            "cottage in the spring of that year. Today the light is still an active aid to "
            "navigation. The cottage is a small museum run by volunteers and is open on weekends "
            "from April to October.",
            "In 2003 the town restored the tower, repointed the granite and replaced the rusted "
            "iron gallery rail. Visitors can climb to the lantern room on clear days and look "
            "out over the same reefs that sank the Mary Ellen.",
        ),
    ),
)


def _render_scan_page(title: str, paragraphs: Sequence[str], page_no: int) -> Image.Image:
    """Render one page of text as a clean grayscale 'scan' (large black text on white)."""
    img = Image.new("L", (SCAN_W, SCAN_H), 255)
    d = ImageDraw.Draw(img)
    title_font = load_font("serif-bold", 52)
    body_font = load_font("serif", 40)
    margin = 160
    width = SCAN_W - 2 * margin
    y = 190
    for line in _wrap(title, title_font, width):
        d.text((margin, y), line, font=title_font, fill=0)
        y += 70
    y += 50
    for para in paragraphs:
        for line in _wrap(para, body_font, width):
            d.text((margin, y), line, font=body_font, fill=0)
            y += 58
        y += 34
    if y > SCAN_H - 200:
        raise ValueError(f"scan page {page_no} overflows")
    d.text((SCAN_W / 2, SCAN_H - 130), f"- {page_no} -", font=body_font, fill=0, anchor="mm")
    return img


def _write_scan_pdf(path: Path) -> None:
    """Create an image-only PDF: each page is one full-page image, no text layer."""
    doc = _new_pdf("The Lighthouse at Cormorant Head (scan)", "Image-only scanned document")
    for i, (title, paragraphs) in enumerate(_LIGHTHOUSE_PAGES, start=1):
        page = doc.new_page(width=PAGE_W, height=PAGE_H)
        # pymupdf recompresses the pixels itself, so a fast PNG encode is enough here
        page.insert_image(page.rect, stream=_png_bytes(_render_scan_page(title, paragraphs, i), optimize=False))
    _save_pdf(doc, path)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
PIPELINE_STAGES: tuple[str, ...] = ("Discover", "Extract", "Embed", "Index", "Publish")


def _write_diagram_png(path: Path) -> None:
    """A flow chart of the ingestion pipeline with readable text labels."""
    w, h = 1600, 520
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    title_font = load_font("sans-bold", 46)
    box_font = load_font("sans", 32)  # regular weight + thin outline: tesseract reads the labels
    note_font = load_font("sans", 30)
    d.text((w / 2, 50), "Ingestion pipeline", font=title_font, fill="black", anchor="mt")
    box_w, box_h, gap = 260, 150, 50
    x = (w - (len(PIPELINE_STAGES) * box_w + (len(PIPELINE_STAGES) - 1) * gap)) / 2
    top = 190
    fills = [(220, 235, 252), (222, 245, 225), (253, 240, 214), (240, 226, 250), (252, 224, 224)]
    for i, stage in enumerate(PIPELINE_STAGES):
        d.rounded_rectangle([x, top, x + box_w, top + box_h], radius=18, fill=fills[i], outline="black", width=2)
        d.text((x + box_w / 2, top + box_h / 2), stage, font=box_font, fill="black", anchor="mm")
        if i < len(PIPELINE_STAGES) - 1:
            ax0, ax1, ay = x + box_w + 10, x + box_w + gap - 10, top + box_h / 2
            d.line([(ax0, ay), (ax1 - 14, ay)], fill="black", width=6)
            d.polygon([(ax1, ay), (ax1 - 22, ay - 14), (ax1 - 22, ay + 14)], fill="black")
        x += box_w + gap
    d.text((w / 2, 410), "PDFs and images in, searchable index out", font=note_font, fill=(40, 40, 40), anchor="mt")
    img.save(path, format="PNG", optimize=True)


def _lerp(a: Sequence[int], b: Sequence[int], t: float) -> tuple[int, int, int]:
    """Linear interpolation between two RGB colours."""
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def _ridge(width: int, base: float, amps: Iterable[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """Points of a mountain ridge line: ``base`` plus a sum of sines (amplitude, period, phase)."""
    amps = list(amps)
    return [
        (x, base - sum(a * math.sin(2 * math.pi * x / p + ph) for a, p, ph in amps)) for x in range(0, width + 1, 4)
    ]


def _write_photo_jpg(path: Path) -> None:
    """A synthetic, photo-like sunset over mountains and a lake (no text)."""
    w, h = 1024, 640
    horizon = 400
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    sky = [(24, 30, 78), (120, 60, 120), (238, 112, 70), (252, 196, 110)]
    for y in range(horizon):
        t = y / (horizon - 1) * (len(sky) - 1)
        i = min(int(t), len(sky) - 2)
        d.line([(0, y), (w, y)], fill=_lerp(sky[i], sky[i + 1], t - i))
    sun_x, sun_y, sun_r = 640, 360, 62
    for r in range(sun_r + 60, sun_r, -4):  # soft glow
        k = (r - sun_r) / 60
        d.ellipse([sun_x - r, sun_y - r, sun_x + r, sun_y + r], fill=_lerp((255, 236, 170), (250, 170, 95), k))
    d.ellipse([sun_x - sun_r, sun_y - sun_r, sun_x + sun_r, sun_y + sun_r], fill=(255, 246, 214))
    far = _ridge(w, 330, [(38, 410, 0.4), (16, 150, 1.3), (6, 53, 2.0)])
    d.polygon([(0, horizon), *far, (w, horizon)], fill=(104, 62, 98))
    near = _ridge(w, 372, [(30, 520, 2.2), (14, 190, 0.1), (5, 61, 1.1)])
    d.polygon([(0, horizon), *near, (w, horizon)], fill=(52, 34, 60))
    for y in range(horizon, h):  # water: darker, reflected sky colours
        t = (y - horizon) / (h - horizon)
        d.line([(0, y), (w, y)], fill=_lerp((196, 112, 84), (22, 26, 60), t ** 0.7))
    for k, y in enumerate(range(horizon + 6, h - 20, 11)):  # sun glitter on the water
        half = max(6, 70 - k * 3) + (k * 37) % 23
        d.line([(sun_x - half, y), (sun_x + half, y)], fill=(255, 214, 150), width=3)
    d.polygon([(0, h), (0, 560), (140, 585), (300, 610), (420, h)], fill=(16, 16, 24))  # foreground shore
    img.save(path, format="JPEG", quality=85, optimize=True)


def _sign_image_upright() -> Image.Image:
    """The correctly oriented (landscape) picture of a market sign on a wall."""
    w, h = 1200, 800
    img = Image.new("RGB", (w, h), (92, 118, 140))
    d = ImageDraw.Draw(img)
    for y in range(0, h, 40):  # brick-ish wall
        off = 0 if (y // 40) % 2 == 0 else 50
        for x in range(-off, w, 100):
            d.rectangle([x + 2, y + 2, x + 98, y + 38], fill=(150, 84, 64), outline=(120, 66, 50))
    d.rectangle([110, 110, w - 110, h - 110], fill=(60, 40, 26))  # frame
    d.rectangle([130, 130, w - 130, h - 130], fill=(246, 238, 214))  # board
    big = load_font("sans-bold", 86)
    mid = load_font("sans", 46)
    d.text((w / 2, 200), "HARBOR MARKET", font=big, fill=(30, 50, 90), anchor="mt")
    d.line([(260, 320), (w - 260, 320)], fill=(30, 50, 90), width=4)
    lines = ("Open Tuesday to Sunday", "7 am to 2 pm", "Fresh fish, bread and flowers")
    for i, line in enumerate(lines):
        d.text((w / 2, 360 + i * 72), line, font=mid, fill=(20, 20, 20), anchor="mt")
    return img


def _write_sign_jpg(path: Path) -> None:
    """A JPEG whose pixels are stored rotated, with EXIF Orientation 6 to display it upright.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    upright picture rotated 90 degrees counter-clockwise (PIL ``rotate(90)``).
    """
    stored = _sign_image_upright().rotate(90, expand=True)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    stored.save(path, format="JPEG", quality=85, optimize=True, exif=exif)


# --------------------------------------------------------------------------------------------------
# README and entry points
# --------------------------------------------------------------------------------------------------
_README_TEXT = f"""mmrag sample corpus
===================

Every file in this folder is generated by scripts/make_sample_corpus.py (no network, nothing
copied from elsewhere); rerun it to recreate them. All text, pictures, companies, people and
places in it are written or drawn by that script and are fictional or general knowledge.
License: generated content, CC0 (public domain dedication), like the rest of the project's
sample data.

Files
-----
{REEF_PDF}
    Born-digital PDF, 3 pages: a pocket field guide to coral reef fish (reef zones,
    parrotfish, clownfish, cleaner wrasse, butterflyfish, groupers, reef etiquette).
{BIKE_PDF}
    Born-digital PDF, 3 pages: a home mechanic's bicycle maintenance manual, with text
    tables of tire pressures and a maintenance schedule.
{COFFEE_PDF}
    Born-digital PDF, 3 pages: Q3 2024 quarterly report of the fictional coffee company
    Northwind Roasters, with a revenue table and an embedded raster bar chart (page 2,
    0-based page 1) captioned "Figure 1".
{SCAN_PDF}
    Image-only PDF, 2 pages, no text layer (like a scan; needs OCR): a short history of the
    fictional lighthouse at Cormorant Head.
{DIAGRAM_PNG}
    PNG diagram: flow chart "Discover -> Extract -> Embed -> Index -> Publish".
{PHOTO_JPG}
    JPEG, photo-like synthetic sunset over mountains and a lake; contains no text.
{SIGN_JPG}
    JPEG of a market sign, pixels stored rotated with EXIF Orientation = 6 (rotate 90
    degrees clockwise to display upright).
{README}
    This file.
"""


def make_sample_corpus(out_dir: Path) -> list[Path]:
    """Generate the sample corpus into ``out_dir`` (created if needed); return the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {
        REEF_PDF: lambda p: _write_text_pdf(p, "A Pocket Field Guide to Coral Reef Fish", "Field guide", _reef_pages()),
        BIKE_PDF: lambda p: _write_text_pdf(p, "Bicycle Maintenance Manual", "Maintenance manual", _bike_pages()),
        COFFEE_PDF: lambda p: _write_text_pdf(
            p, "Northwind Roasters - Quarterly Report Q3 2024", "Quarterly report", _coffee_pages()
        ),
        SCAN_PDF: _write_scan_pdf,
        DIAGRAM_PNG: _write_diagram_png,
        PHOTO_JPG: _write_photo_jpg,
        SIGN_JPG: _write_sign_jpg,
        README: lambda p: p.write_text(_README_TEXT, encoding="utf-8", newline="\n"),
    }
    written: list[Path] = []
    for name in ALL_FILES:
        path = out_dir / name
        writers[name](path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: generate the corpus and print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir", nargs="?", default="sample_corpus", type=Path, help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    paths = make_sample_corpus(args.out_dir)
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size
        print(f"wrote {path}  ({size / 1024:.1f} KiB)")
    print(f"{len(paths)} files, {total / 1024:.1f} KiB in total, in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
