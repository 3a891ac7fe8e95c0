"""The de-identification section of a DICOM Conformance Statement (PS3.2 Annex N: Table N.8-7,
the profiles and options supported; N.11.2.6 and Table N.11-6, every attribute and its action)
for one configuration, as Markdown a privacy officer can review and sign.

Nothing here decides anything: every action is the engine's (`deidentify.explain`), the CID
7050 codes are the ones the engine writes (`engine.method_codes`), the options and settings
are the configuration's own values. The statement names the configuration file and the files
it points at by SHA-256, so a signed statement can be matched to a running gateway.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from gateway import __version__
from gateway.deidentify.engine import CLEAN_PIXEL_DATA, method_codes
from gateway.deidentify.explain import UNNAMED_ATTRIBUTES, Explanation, explain, unnamed
from gateway.deidentify.profile import OPTION_COLUMNS, enabled_columns
from gateway.deidentify.pseudonyms import MAX_SHIFT_DAYS, MIN_SHIFT_DAYS
from gateway.settings import (
    SKIPPABLE_CHECKS,
    DeidentifySettings,
    PixelSettings,
    PolicySettings,
    Settings,
)


@dataclass(frozen=True)
class Hashed:
    """A file the statement was made from, by content."""

    key: str  # the configuration key that names it ("" for the configuration file itself)
    path: Path
    sha256: str


def hashed(key: str, path: Path) -> Hashed:
    """`path` with the SHA-256 of its content (raises OSError when it cannot be read)."""
    return Hashed(key, path, hashlib.sha256(path.read_bytes()).hexdigest())


@dataclass(frozen=True)
class Site:
    """What the statement describes: the settings that change what leaves, and their files."""

    deidentify: DeidentifySettings = field(default_factory=DeidentifySettings)
    pixels: PixelSettings = field(default_factory=PixelSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    vault_engine: str = "sqlite"
    config: Hashed | None = None  # None: the built-in defaults
    files: tuple[Hashed, ...] = ()  # the word file and pixel rule scripts it names


def site_of(settings: Settings, config: Path) -> Site:
    """What a statement of `settings` (read from `config`) describes, with the configuration
    file and the word file and pixel rule scripts it names, by SHA-256 (OSError when one cannot
    be read)."""
    named = [("", config.resolve()), ("deidentify.vocabulary", settings.deidentify.vocabulary)]
    named += [(f"pixels.ctp_scripts[{i}]", p) for i, p in enumerate(settings.pixels.ctp_scripts)]
    source, *files = (hashed(k, p) for k, p in named if p is not None)
    return Site(
        deidentify=settings.deidentify,
        pixels=settings.pixels,
        policy=settings.policy,
        vault_engine=settings.vault.engine,
        config=source,
        files=tuple(files),
    )


def statement(site: Site, made: date) -> str:
    """The whole section, as Markdown."""
    rows = explain(site.deidentify)
    parts = (
        _header(site, made),
        _profiles(site),
        _settings(site),
        _attributes(rows),
        _unnamed(site.deidentify),
        _integrity(site),
        _pixels(site.pixels),
        _private_and_text(site.deidentify, rows),
        _dropped_and_quarantined(site.policy),
        _sign_off(site),
    )
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


# -- header ------------------------------------------------------------------------------------


def _header(site: Site, made: date) -> Iterator[str]:
    yield "# De-identification: Conformance Statement section (PS3.2 Annex N)"
    yield ""
    yield "| | |"
    yield "|---|---|"
    yield f"| Product | dicom-gateway {__version__} |"
    yield f"| Date of this statement | {made.isoformat()} |"
    if site.config is None:
        yield "| Configuration file | none: the built-in defaults |"
    else:
        yield f"| Configuration file | `{_cell(str(site.config.path))}` |"
        yield f"| Configuration SHA-256 | `{site.config.sha256}` |"
    for f in site.files:
        yield f"| `{f.key}` | `{_cell(str(f.path))}`, SHA-256 `{f.sha256}` |"
    yield f"| Site code (`deidentify.site_code`) | `{site.deidentify.site_code}` |"
    yield "| Profile | PS3.15 Annex E Basic Application Level Confidentiality Profile |"
    yield "| Attribute table | PS3.15 Table E.1-1, rev 2024b (packaged with the gateway) |"
    yield ""
    yield (
        "This statement describes what the gateway does under the configuration above and "
        "no other. Every action in it is the one the de-identification engine built for this "
        "configuration applies (`dicom-gateway describe-profile`), not a copy of the "
        "standard's table. A configuration file or a file it names whose SHA-256 differs from "
        "the one above is not covered by this statement: make it again and have it signed "
        "again."
    )


# -- N.8.4.4: profiles and options -------------------------------------------------------------

# PS3.15 option -> its Table E.1-1 column and the setting that turns it on
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("Clean Graphics", "cleanGraphOpt", "deidentify.clean_graphics"),
    ("Clean Structured Content", "cleanStructContOpt", "deidentify.clean_structured_content"),
    ("Clean Descriptors", "cleanDescOpt", "deidentify.clean_descriptors"),
    (
        "Retain Longitudinal Temporal Information with Full Dates",
        "rtnLongFullDatesOpt",
        'deidentify.longitudinal_dates = "full"',
    ),
    (
        "Retain Longitudinal Temporal Information with Modified Dates",
        "rtnLongModifDatesOpt",
        'deidentify.longitudinal_dates = "modified" or "year"',
    ),
    (
        "Retain Patient Characteristics",
        "rtnPatCharsOpt",
        "deidentify.retain_patient_characteristics",
    ),
    ("Retain Device Identity", "rtnDevIdOpt", "deidentify.retain_device_identity"),
    ("Retain Institution Identity", "rtnInstIdOpt", "deidentify.retain_institution_identity"),
    ("Retain UIDs", "rtnUIDsOpt", "deidentify.retain_uids"),
    ("Retain Safe Private", "rtnSafePrivOpt", "deidentify.retain_safe_private"),
)


def _profiles(site: Site) -> Iterator[str]:
    options = site.deidentify
    on = enabled_columns(options)
    codes = dict(method_codes(options))
    yield "## 1. Attribute Confidentiality Profiles (PS3.2 Table N.8-7)"
    yield ""
    yield "| Profile / option | In force | Set by | Recorded in each output (CID 7050) |"
    yield "|---|---|---|---|"
    basic = next(iter(codes))
    yield (
        "| Basic Application Level Confidentiality Profile | Yes | always | "
        f"{basic} {codes[basic]} |"
    )
    clean_value, clean_meaning = CLEAN_PIXEL_DATA
    yield (
        f"| Clean Pixel Data | {_pixels_in_force(site.pixels)} | `[pixels]` (section 5) | "
        f"{clean_value} {clean_meaning} on each image whose every frame was checked (with "
        "BurnedInAnnotation NO); not on an image of a category the site skips |"
    )
    yield (
        "| Clean Recognizable Visual Features | No | - | photographs are dropped, not "
        "cleaned (section 8) |"
    )
    recorded = {meaning: value for value, meaning in codes.items()}
    for name, column, setting in _OPTIONS:
        in_force = column in on
        meaning = OPTION_COLUMNS[column]
        value = recorded.get(meaning)
        code = f"{value} {meaning}" if value else "-"
        yield f"| {name} | {'Yes' if in_force else 'No'} | `{setting}` | {code} |"
    yield ""
    if options.longitudinal_dates == "year":
        yield (
            'With `longitudinal_dates = "year"` dates keep their year only (stricter than '
            "the option asks); outputs record the Modified Dates option."
        )
    if options.longitudinal_dates == "off":
        yield (
            'With `longitudinal_dates = "off"` neither temporal option is in force: dates '
            "get the basic profile's actions."
        )
    yield (
        "The gateway de-identifies only; it re-identifies nothing it sends. Results the "
        "analysis server returns are re-identified on site from the vault before they are "
        "stored in PACS (docs/reidentify.md)."
    )


def _pixels_in_force(pixels: PixelSettings) -> str:
    if not pixels.skip:
        return "Yes"
    return f"Yes, except images screened as {', '.join(pixels.skip)} (`[pixels] skip`)"


# -- the configuration in force ----------------------------------------------------------------

_MEANING: dict[str, str] = {
    # [deidentify]
    "site_code": "prefix of every patient pseudonym",
    "uid_root": "root of new UIDs (none: `2.25.` and a random 128-bit integer)",
    "retain_patient_characteristics": "Retain Patient Characteristics Option",
    "longitudinal_dates": 'dates: "modified" shifted per patient, "year" year only, '
    '"full" kept, "off" basic profile',
    "retain_device_identity": "Retain Device Identity Option",
    "retain_institution_identity": "Retain Institution Identity Option",
    "retain_uids": "Retain UIDs Option",
    "retain_safe_private": "Retain Safe Private Option",
    "clean_descriptors": "Clean Descriptors Option",
    "clean_structured_content": "Clean Structured Content Option (and SR not dropped)",
    "clean_graphics": "Clean Graphics Option",
    "keep_cleaned": "narrative attributes kept, cleaned by the word allow-list",
    "vocabulary": "the site's own words for the allow-list of free text",
    # [pixels]
    "skip": "screening categories not checked for burned-in text",
    "ctp_scripts": "CTP DicomPixelAnonymizer scripts: rectangles always masked",
    "ultrasound_regions": "ultrasound: everything outside the regions masked",
    "keep_markers": "detected text read as exactly one of these stays",
    "margin": "pixels added on every side of detected text before masking",
    "max_seconds": "longer pixel checks are quarantined (pixel-check-timeout)",
}


def meanings() -> dict[str, str]:
    """What each setting of `[deidentify]` and `[pixels]` means (a new setting without a
    meaning fails tests/unit/test_conformance.py)."""
    return dict(_MEANING)


def _settings(site: Site) -> Iterator[str]:
    yield "## 2. Configuration in force"
    yield ""
    yield "Every setting that changes what leaves the site; *(default)* marks the built-in value."
    for section, values in (("deidentify", site.deidentify), ("pixels", site.pixels)):
        yield ""
        yield f"`[{section}]`"
        yield ""
        yield "| Setting | Value | Meaning |"
        yield "|---|---|---|"
        default = type(values)()
        for setting in dataclasses.fields(values):
            value = getattr(values, setting.name)
            mark = " *(default)*" if value == getattr(default, setting.name) else ""
            meaning = _MEANING.get(setting.name, "")
            yield f"| `{setting.name}` | {_cell(_toml(value))}{mark} | {meaning} |"
    yield ""
    yield "`[[policy.rules]]` (first match wins; then the built-in rules of section 8)"
    yield ""
    if not site.policy.rules:
        yield "None: every instance the built-in rules do not drop is de-identified."
        return
    yield "| # | Action | Reason code | Matches |"
    yield "|---|---|---|---|"
    for i, rule in enumerate(site.policy.rules, 1):
        matches = [
            f"{name} {_toml(getattr(rule, name))}"
            for name in ("sop_classes", "modalities", "peers", "body_parts", "series_descriptions")
            if getattr(rule, name)
        ]
        yield f"| {i} | {rule.action} | `{rule.reason}` | {_cell('; '.join(matches)) or 'all'} |"


def _toml(value: object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str | Path):
        return f'"{value}"'
    return str(value)


# -- N.11.2.6: every attribute and its action --------------------------------------------------


def _attributes(rows: tuple[Explanation, ...]) -> Iterator[str]:
    yield "## 3. Attribute Confidentiality Details (PS3.2 Table N.11-6)"
    yield ""
    yield (
        "Action codes as PS3.15 E.1.1 defines them: D dummy or random value, Z empty, X "
        "removed, K kept, C cleaned (kept with a changed value), U new UID, consistently "
        "mapped. The action is what this gateway does, which may differ from the table's code "
        "for the attribute's VR (a D on a sequence removes it) or because a gateway rule comes "
        "first. No attribute is kept in an Encrypted Attributes Sequence (Encrypted: N for "
        "every row); the originals stay only in the on-site vault, encrypted (section 4)."
    )
    yield ""
    yield "### 3.1 Gateway rules, applied before Table E.1-1"
    yield ""
    yield "| Attribute Name | Tag | Action | Encrypted | What happens | Why |"
    yield "|---|---|---|---|---|---|"
    for r in rows:
        if r.source == "gateway":
            reason = r.reason.removeprefix("Gateway: ")
            yield (
                f"| {_cell(r.row.rule.name)} | {r.row.rule.tag} | {r.effect.action} | N | "
                f"{_cell(r.does)} | {_cell(reason)} |"
            )
    yield ""
    yield "### 3.2 PS3.15 Table E.1-1 (rev 2024b)"
    yield ""
    yield "| Attribute Name | Tag | Basic Profile | Action | Encrypted | What happens | Why |"
    yield "|---|---|---|---|---|---|---|"
    for r in rows:
        if r.source == "table":
            rule = r.row.rule
            yield (
                f"| {_cell(rule.name)} | {_cell(rule.tag)} | {rule.basic} | {r.effect.action} "
                f"| N | {_cell(r.does)} | {_cell(r.reason)} |"
            )


def _unnamed(options: DeidentifySettings) -> Iterator[str]:
    yield "### 3.3 Attributes Table E.1-1 does not name (allow-list)"
    yield ""
    yield UNNAMED_ATTRIBUTES
    yield ""
    yield (
        "So an attribute added to the standard after this gateway's dictionary is removed; "
        "one that is known, current and does not name a person or organisation is treated by "
        "its VR as below. This is not configurable per attribute."
    )
    yield ""
    yield "| VR | Action | What happens |"
    yield "|---|---|---|"
    for vr, done in unnamed(options):
        yield f"| {vr} | {done.action} | {_cell(done.does)} |"


# -- N.11.2.6: referential integrity -----------------------------------------------------------


def _integrity(site: Site) -> Iterator[str]:
    options = site.deidentify
    shared = site.vault_engine == "postgresql"
    scope = (
        'every gateway that shares this PostgreSQL vault (`[vault] engine = "postgresql"`; '
        "docs/scaling.md): the first gateway to map a value wins, every other one reads it"
        if shared
        else "this gateway's vault (`[vault]`, one SQLite file); another gateway with its own "
        "vault maps the same values to other pseudonyms"
    )
    root = options.uid_root
    new = f"`{root}.<random digits>`" if root else "`2.25.<random 128-bit integer>`"
    yield "## 4. Referential integrity"
    yield ""
    yield (
        f"Scope: {scope}. Within it, across instances, studies, associations, restarts and "
        "re-sends:"
    )
    yield ""
    if options.retain_uids:
        yield "- **UIDs** are kept (Retain UIDs Option)."
    else:
        yield (
            "- **UIDs**: every UID the standard does not itself define, at the top level and "
            "in every sequence (Referenced SOP Instance UID, Frame of Reference UID, SR and RT "
            f"references, ...), goes through one map to a new random UID {new}: the same "
            "original gets the same new UID, so references between instances stay intact."
        )
    yield (
        f"- **Patients**: Patient ID and Patient's Name become `{options.site_code}-` and a "
        "random code, one per patient (Issuer of Patient ID, Patient ID, and the name with "
        "case and spacing normalised); an instance with neither ID nor name is a patient of "
        "its own study. Accession Number and Study ID become random IDs, one per original value."
    )
    yield _dates_line(options.longitudinal_dates)
    yield (
        "- Nothing is derived from an original value: pseudonyms, UIDs and offsets are drawn "
        "at random and kept in the vault, their originals encrypted (AES-256-GCM) under the "
        "vault key. The Encrypted Attributes Data Set is not used. **Without the vault and "
        "its key, results can no longer be matched to patients.**"
    )


def _dates_line(dates: str) -> str:
    if dates == "modified":
        return (
            "- **Dates** (DA, DT, at any depth) move back by one random whole number of days "
            f"per patient ({MIN_SHIFT_DAYS} to {MAX_SHIFT_DAYS} days), kept in the vault: "
            "intervals between a patient's dates, across studies, are preserved. Times of day "
            "stay."
        )
    if dates == "year":
        return "- **Dates** keep their year only; no offset is kept."
    if dates == "full":
        return "- **Dates** are kept unchanged (Full Dates)."
    return "- **Dates** get the basic profile's actions; dates the table does not name are removed."


# -- pixels, private attributes, free text -----------------------------------------------------


def _pixels(pixels: PixelSettings) -> Iterator[str]:
    skipped = ", ".join(f"`{s}`" for s in pixels.skip) or "none"
    yield "## 5. Pixel data: burned-in text (docs/pixels.md)"
    yield ""
    yield (
        "Every image is screened; the header flag BurnedInAnnotation is not trusted. Categories "
        f"not checked (`[pixels] skip`; only {', '.join(SKIPPABLE_CHECKS)} may be): {skipped}. "
        "An image of a skipped category leaves without a BurnedInAnnotation claim."
    )
    yield ""
    scripts = len(pixels.ctp_scripts)
    yield (
        f"- Masks: site rules from {scripts} CTP DicomPixelAnonymizer script(s) "
        "(`ctp_scripts`); "
        + (
            "ultrasound: everything outside a sane Sequence of Ultrasound Regions"
            if pixels.ultrasound_regions
            else "ultrasound regions not used (`ultrasound_regions = false`)"
        )
        + "; a text detector (PP-OCR on onnxruntime, pinned model files) on every frame, "
        "and a text map of the gateway's own whose regions the recogniser reads as text, "
        f"masks grown by {pixels.margin} pixels; detected text read as one of "
        f"{', '.join(pixels.keep_markers) or '(none)'} stays."
    )
    yield (
        "- Masked pixels are set to the darkest value; masked images are re-encoded "
        "losslessly or written uncompressed; an image with nothing to mask is not re-encoded."
    )
    yield (
        "- Every image that leaves, masked or not, is written in a sanitised container: "
        "native pixel data cut to its computed length, bits above High Bit cleared; JPEG "
        "COM and APPn segments and JPEG 2000 COM, TLM, PLM, PLT removed (entropy-coded data "
        "copied bit-exact); RLE re-encoded; frames encapsulated afresh. Icon images, overlays "
        "(60xx) and curves (50xx) are removed (section 3.1)."
    )
    yield (
        "- Fails closed: an image that cannot be checked, cleaned or re-encoded is "
        f"quarantined (section 8); so is a check that takes over {pixels.max_seconds:g} s."
    )
    yield (
        "- Not removed: bytes hidden inside a JPEG's entropy-coded data after its last block, "
        "or inside a JPEG 2000 tile-part after its last packet."
    )


def _private_and_text(options: DeidentifySettings, rows: Iterable[Explanation]) -> Iterator[str]:
    private = next(r for r in rows if r.action is None)  # (GGGG,EEEE): the private filter
    yield "## 6. Private attributes"
    yield ""
    yield f"Action {private.effect.action}: {private.effect.does}. " + (
        "With the Retain Safe Private Option: only the attributes of PS3.15 Table E.3.10-1 "
        "whose value is a number or code of the VR that table gives (explicit VR only); "
        "UIDs, sequences, binary payloads and free text among them are removed even then; "
        "safe private text stays only when every word of it is known."
        if options.retain_safe_private
        else "Private creators go with them."
    )
    yield ""
    yield "## 7. Free text (docs/deidentify.md, section 6)"
    yield ""
    kept = ", ".join(f"`{k}`" for k in options.keep_cleaned) or "none"
    words = f"`{options.vocabulary}`" if options.vocabulary else "none"
    yield (
        "- Narrative attributes (comments, histories, reasons, occupation; section 3.1) are "
        f"removed; kept, cleaned, by `keep_cleaned`: {kept}."
    )
    yield (
        "- Every other text value that is kept, at any depth, keeps only known words: the "
        f"shipped clinical vocabulary and the site's word file ({words}); dates, times, "
        "e-mail addresses, URLs, postcodes, telephone numbers, numbers of 5 or more digits and "
        "ages over 89 never pass. Words that are also names or places go in a name's context. "
        "Then this instance's own identifiers (names, IDs, addresses, institution, birth date) "
        "are removed on top. Coded strings are kept whole or emptied."
    )


# -- dropped and quarantined -------------------------------------------------------------------


def _dropped_and_quarantined(policy: PolicySettings) -> Iterator[str]:
    yield "## 8. What is dropped, and what is quarantined"
    yield ""
    site_rules = (
        f"the {len(policy.rules)} site rule(s) of section 2" if policy.rules else "no site rule"
    )
    yield (
        f"**Dropped before de-identification** (counted and audited by reason): {site_rules}, "
        "then the built-in rules: `encapsulated-document` (PDF, CDA, STL, OBJ, MTL), "
        "`structured-report` (unless Clean Structured Content), `raw-data`, `audio`, "
        "`photograph` (VL and video photographs, modality XC), `private-sop-class`."
    )
    yield ""
    yield (
        "**Quarantined** (held on site, encrypted, never sent; reviewed with `dicom-gateway "
        "spool quarantine`; erased after `retention.quarantine_hours`): anything not proven "
        "clean. Reason codes: unreadable input (`not-dicom`, `unreadable`, `missing-uid`, "
        "`invalid-uid`, `truncated-element`, `truncated-pixel-data`, `bad-image-header`, "
        "transfer syntax problems, `deidentify-error:*`); pixels (`pixel-bits-layout`, "
        "`container-syntax-unsupported`, `jpeg-*`, `j2k-*`, `jp2-*`, `rle-*`, "
        "`pixel-container-frames:*`, `decode-failed:*`, `frame-count-mismatch`, "
        "`pixel-check-timeout`, `float-pixel-data-with-text`, `cannot-reencode-*`, "
        "`pixel-error:*`); the independent release check, which re-reads every output against "
        "its original (`release-*`: an attribute the options may not keep, a private "
        "attribute off the safe list, an original identifier or UID anywhere, a word outside "
        "the vocabulary, a dirty pixel container, missing provenance); "
        "`study-mixed-patients` (the whole study is then held); `worker-crashed`, "
        "`worker-timeout`. Reasons and reason files never carry a value from the instance."
    )


# -- sign-off ----------------------------------------------------------------------------------


def _sign_off(site: Site) -> Iterator[str]:
    digest = site.config.sha256 if site.config else "(built-in defaults)"
    yield "## 9. Sign-off"
    yield ""
    yield (
        "I have reviewed this statement for the configuration with SHA-256 "
        f"`{digest}` and the files listed with it, and approve de-identification as "
        "described for the site above."
    )
    yield ""
    yield "| Privacy officer | |"
    yield "|---|---|"
    for line in ("Name", "Role", "Date", "Signature"):
        yield f"| {line} | |"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
