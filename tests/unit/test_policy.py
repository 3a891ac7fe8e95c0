"""Routes (issue 7, data minimisation): site rules over SOP class, modality, body part, series
description and the configured sender decide what is processed; the rest is dropped with the
rule's reason."""

from __future__ import annotations

from gateway.deidentify.policy import Facts, Policy
from gateway.settings import DeidentifySettings, PolicyRule, PolicySettings

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def policy(*rules: PolicyRule) -> Policy:
    return Policy(PolicySettings(rules=rules), DeidentifySettings())


CHEST_CT_FROM_ED = policy(
    PolicyRule(
        action="process",
        reason="chest-ct-ed",
        modalities=("CT",),
        body_parts=("chest",),
        series_descriptions=("*lung*", "*thorax*"),
        peers=("ed-ct",),
    ),
    PolicyRule(action="drop", reason="not-routed"),
)


def test_an_instance_matching_every_list_of_a_route_is_processed() -> None:
    facts = Facts(CT, "CT", "ed-ct", "CHEST", "Thorax 1.0 B70f")
    assert CHEST_CT_FROM_ED.decide(facts).process


def test_an_instance_failing_any_list_falls_through_to_the_next_rule() -> None:
    for facts in (
        Facts(CT, "CT", "ed-ct", "ABDOMEN", "Thorax 1.0"),  # body part
        Facts(CT, "CT", "ed-ct", "CHEST", "Abdomen venous"),  # series description
        Facts(CT, "CT", "radiology", "CHEST", "Lung 1.0"),  # sender
        Facts(MR, "MR", "ed-ct", "CHEST", "Lung"),  # modality
        Facts(CT, "CT", "ed-ct", "", ""),  # facts absent: no match
    ):
        decision = CHEST_CT_FROM_ED.decide(facts)
        assert (decision.process, decision.reason) == (False, "not-routed")


def test_without_site_rules_the_built_in_rules_decide() -> None:
    assert policy().decide(Facts(CT, "CT")).process
    sr = "1.2.840.10008.5.1.4.1.1.88.22"
    assert policy().decide(Facts(sr, "SR")).reason == "structured-report"
