from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import ConfigError
from silo_node.policy import BUILTIN_KINDS, Redactor

pytestmark = pytest.mark.unit

MARKER = re.compile(r"\[REDACTED:([A-Za-z0-9_.-]+)\]")

POSITIVES = [
    # (text, the PII inside it, kind)
    ("Contact jane.doe@example.org for details.", "jane.doe@example.org", "email"),
    ("mail J.Smith+labs@mail.hospital.nhs.uk today", "J.Smith+labs@mail.hospital.nhs.uk", "email"),
    ("Call +44 20 7946 0958 after 5pm.", "+44 20 7946 0958", "phone"),
    ("Call +44 (0)20 7946 0958.", "+44 (0)20 7946 0958", "phone"),
    ("Dial +442079460958 now", "+442079460958", "phone"),
    ("Office: +1 (555) 123-4567", "+1 (555) 123-4567", "phone"),
    ("Office: (555) 123-4567", "(555) 123-4567", "phone"),
    ("Cell 555-123-4567, evenings", "555-123-4567", "phone"),
    ("Cell 555.123.4567", "555.123.4567", "phone"),
    ("Toll free 1-800-555-1234.", "1-800-555-1234", "phone"),
    ("SSN 123-45-6789 on file", "123-45-6789", "ssn"),
    ("NHS number 943 476 5919 verified", "943 476 5919", "nhs_number"),
    ("NHS no: 9434765919", "9434765919", "nhs_number"),
    ("MRN: 12345678", "12345678", "mrn"),
    ("MRN 1234567 admitted", "1234567", "mrn"),
    ("see record no. 884422", "884422", "mrn"),
    ("Medical record number: AB123456", "AB123456", "mrn"),
    ("DOB: 12/03/1985", "12/03/1985", "dob"),
    ("D.O.B. 03/12/85, male", "03/12/85", "dob"),
    ("date of birth 1985-03-12", "1985-03-12", "dob"),
    ("Patient born on 3 March 1985 in Leeds", "3 March 1985", "dob"),
    ("She was born March 3, 1985.", "March 3, 1985", "dob"),
    ("Birthdate: 3rd of Sept 1990", "3rd of Sept 1990", "dob"),
]

NEGATIVES = [
    "Python 3.11.7 was released in December 2023.",
    "Take 500 mg twice daily; max 4000 mg per day.",
    "In 1985 there were 12345 cases and 2,500,000 people at risk.",
    "The trial started on 12/03/1985 and ended 1986-04-30.",
    "Born in 1985, she studied medicine.",
    "ISBN 978-0-306-40615-7 and DOI 10.1000/182",
    "Server 192.168.100.1 runs version 10.2.3.4.",
    "pi is 3.14159 and e is 2.71828",
    "Blood pressure 120/80 mmHg, heart rate 72 bpm, temperature 37.5 C.",
    "The medical record 2019 review found 42 errors.",
    "Equation x = +3 5 7 has no solution.",
    "Reference range 3.5-5.0 mmol/L; dose 0.5-1 mg/kg.",
    "Chapter 12, pages 123-456 of volume 7.",
    "See ICD-10 code E11.9 and CPT 99213.",
    "user at example dot com",
    "An adobe house from 12/03/1985.",
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(("text", "pii", "kind"), POSITIVES)
def test_positive_is_redacted_with_its_kind(redactor: Redactor, text: str, pii: str, kind: str) -> None:
    redacted, count = redactor.redact(text)
    assert count == 1
    assert pii not in redacted
    assert redacted == text.replace(pii, f"[REDACTED:{kind}]")


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_is_left_alone(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == (text, 0)


def test_spaced_number_failing_nhs_checksum_is_a_phone(redactor: Redactor) -> None:
    assert redactor.redact("tel 555 123 4567") == ("tel [REDACTED:phone]", 1)
    assert redactor.redact("NHS 943 476 5919") == ("NHS [REDACTED:nhs_number]", 1)


def test_several_kinds_in_one_text_are_all_counted(redactor: Redactor) -> None:
    text = (
        "Jane (DOB: 12/03/1985, MRN: 12345678) can be reached at jane@example.org or "
        "555-123-4567; SSN 123-45-6789; NHS 943 476 5919. Dose 500 mg."
    )
    redacted, count = redactor.redact(text)
    assert count == 6
    assert sorted(MARKER.findall(redacted)) == sorted(["dob", "mrn", "email", "phone", "ssn", "nhs_number"])
    assert "Dose 500 mg." in redacted
    for secret in ("12/03/1985", "12345678", "jane@example.org", "555-123-4567", "123-45-6789", "943 476 5919"):
        assert secret not in redacted


def test_builtin_kinds_are_listed(redactor: Redactor) -> None:
    assert set(BUILTIN_KINDS) == {"email", "phone", "ssn", "nhs_number", "mrn", "dob"}
    assert set(redactor.kinds) == set(BUILTIN_KINDS)


def test_extra_pattern_is_applied_after_builtins() -> None:
    redactor = Redactor({"staff_id": r"S-\d{6}", "ward": r"(?i)ward\s+(?P<pii>[A-Z]\d)"})
    text = "Seen by S-123456 on Ward B7, mail a@b.org"
    redacted, count = redactor.redact(text)
    assert redacted == "Seen by [REDACTED:staff_id] on Ward [REDACTED:ward], mail [REDACTED:email]"
    assert count == 3
    assert redactor.kinds[-2:] == ("staff_id", "ward")


def test_overlapping_matches_redact_once() -> None:
    # The extra pattern overlaps the e-mail; the earlier, longer match wins and counts once.
    redactor = Redactor({"domain": r"example\.org"})
    assert redactor.redact("x jane@example.org y") == ("x [REDACTED:email] y", 1)


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"broken": r"(unclosed"}, "'broken'"),
        ({"empty": r"\d*"}, "'empty'"),
        ({"bad name!": r"x"}, "'bad name!'"),
    ],
)
def test_invalid_extra_pattern_is_a_config_error_naming_it(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Redactor(patterns)


def test_nested_strings_are_redacted() -> None:
    redactor = Redactor()
    value = {"author": "jane@example.org", "tags": ["ok", "MRN: 1234567"], "n": 3, "pair": ("a", "555-123-4567")}
    redacted, count = redactor.redact_strings(value)
    assert count == 3
    assert redacted == {
        "author": "[REDACTED:email]",
        "tags": ["ok", "MRN: [REDACTED:mrn]"],
        "n": 3,
        "pair": ("a", "[REDACTED:phone]"),
    }
    assert value["author"] == "jane@example.org"  # the input is not modified


plain_words = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu"), whitelist_characters=" ,.;"))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(before=plain_words, after=plain_words, which=st.integers(0, len(POSITIVES) - 1))
def test_pii_embedded_in_prose_never_survives(before: str, after: str, which: int) -> None:
    _, pii, kind = POSITIVES[which]
    text = f"{before} {pii} {after}"
    if kind in {"mrn", "dob", "nhs_number"}:
        text = f"{before} {POSITIVES[which][0]} {after}"  # these kinds need their context words
    redacted, count = Redactor().redact(text)
    assert pii not in redacted
    assert count >= 1


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    numbers=st.lists(
        st.one_of(
            st.integers(0, 10**6).map(str),
            st.integers(1800, 2100).map(str),
            st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)).map(
                lambda v: f"{v[0]}.{v[1]}.{v[2]}"
            ),
            st.integers(1, 2000).map(lambda n: f"{n} mg"),
            st.floats(0, 1000, allow_nan=False).map(lambda f: f"{f:.2f}"),
        ),
        max_size=8,
    )
)
def test_ordinary_numbers_are_never_redacted(numbers: list[str]) -> None:
    text = "Values: " + ", ".join(numbers) + "."
    assert Redactor().redact(text) == (text, 0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.text(max_size=300))
def test_redaction_is_idempotent_and_markers_survive(text: str) -> None:
    redactor = Redactor()
    once, count = redactor.redact(text)
    twice, again = redactor.redact(once)
    assert again == 0
    assert twice == once
    assert len(MARKER.findall(once)) >= count


_PIECES = st.sampled_from(
    [
        "555",
        "123",
        "4567",
        "0958",
        "7946",
        "20",
        "44",
        "+",
        "(",
        ")",
        "-",
        ".",
        " ",
        "/",
        "@",
        "a.b",
        "example.org",
        "DOB",
        "d.o.b.",
        "born on",
        "Date of birth:",
        "MRN",
        "record no.",
        "NHS number",
        "943 476 5919",
        "March",
        "12/03/1985",
        "3rd",
        "1985",
        "mg",
        "x",
        "555-123-4567",
        "(555) 123-4567",
        "(555)123-4567",
        "+44 20 7946 0958",
        "+442079460958",
        "555.123.4567",
        "555 123 4567",
        "1-555-123-4567",
        "123-45-6789",
        "NHS 9434765919",
        "MRN: 12345678",
        "DOB: 12/03/1985",
        "jane@example.org",
        "Date of bırth: 3 March 1985",
        "DOB: 12/03/1985 (Zoë)",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_PIECES, st.sampled_from(["", " ", " ", " ", "-", ".", ", "])), max_size=16).map(
        lambda parts: "".join(piece + sep for piece, sep in parts)
    )
)
def test_the_hints_never_skip_a_rule_that_would_have_matched(text: str) -> None:
    import dataclasses

    fast = Redactor()
    exhaustive = Redactor()
    exhaustive._rules = tuple(dataclasses.replace(rule, hint=None) for rule in exhaustive._rules)
    assert fast.redact(text) == exhaustive.redact(text)
