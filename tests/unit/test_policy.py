"""The auth policy (peerd/core/policy.py): parsing, roles, scopes, token digests."""

from __future__ import annotations

import hashlib
import tomllib
from typing import Any

import pytest

from peerd.core.policy import (
    ROLES,
    UNRESTRICTED,
    Permission,
    Principal,
    parse_policy,
    token_sha256,
)
from peerd.errors import AccessDenied, InvalidArgument

CI_TOKEN = "peerd_" + "c" * 43
ALICE_TOKEN = "peerd_" + "a" * 43

POLICY = f"""
[access]
health = "authenticated"
reflection = "open"

[[principals]]
name = "payments-ci"
token_sha256 = ["{token_sha256(CI_TOKEN)}"]
grants = [{{ role = "operator", tasks = ["payments-"] }},
          {{ role = "viewer", tasks = ["shared-", "billing-report"] }}]

[[principals]]
name = "alice"
token_sha256 = ["{token_sha256(ALICE_TOKEN)}"]
certificate = ["alice", "alice.example.com"]
grants = [{{ role = "admin", tasks = ["*"] }}]
"""


def policy_doc(text: str = POLICY) -> dict[str, Any]:
    return tomllib.loads(text)


def test_token_digest_is_sha256_hex() -> None:
    assert token_sha256("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(token_sha256(CI_TOKEN)) == 64


def test_roles_table() -> None:
    assert ROLES["viewer"] == {Permission.READ}
    assert ROLES["operator"] == {Permission.READ, Permission.WRITE, Permission.TRIGGER}
    assert ROLES["admin"] == set(Permission)


def test_principals_by_token_and_certificate() -> None:
    policy = parse_policy(policy_doc())
    ci = policy.by_token(CI_TOKEN)
    assert ci is not None and (ci.name, ci.source) == ("payments-ci", "token")
    assert policy.by_token("peerd_" + "x" * 43) is None
    alice = policy.by_certificate(["unknown-cn", "alice.example.com"])
    assert alice is not None and (alice.name, alice.source) == ("alice", "certificate")
    assert policy.by_certificate(["bob"]) is None
    assert not policy.health_open and policy.reflection_open


def test_scoped_operator() -> None:
    ci = parse_policy(policy_doc()).by_token(CI_TOKEN)
    assert ci is not None
    assert ci.may(Permission.WRITE, "payments-nightly")
    assert ci.may(Permission.TRIGGER, "payments-nightly")
    assert not ci.may(Permission.WRITE, "billing-export")
    assert not ci.may(Permission.READ, "billing-export")
    assert ci.may(Permission.READ, "billing-report")  # the viewer grant
    assert not ci.may(Permission.WRITE, "billing-report")
    assert ci.may(Permission.READ, "shared-dashboards")
    assert not ci.may(Permission.SHELL, "payments-nightly")
    assert ci.may(Permission.WRITE)  # somewhere
    assert not ci.may(Permission.SHELL)
    assert ci.permissions() == [Permission.READ, Permission.WRITE, Permission.TRIGGER]


def test_denial_names_principal_permission_and_task() -> None:
    ci = parse_policy(policy_doc()).by_token(CI_TOKEN)
    assert ci is not None
    with pytest.raises(AccessDenied) as info:
        ci.require(Permission.WRITE, "billing-export")
    assert (
        str(info.value)
        == "principal 'payments-ci' lacks permission 'write' on task 'billing-export'"
    )
    assert (info.value.permission, info.value.task_id) == ("write", "billing-export")
    with pytest.raises(AccessDenied, match="lacks permission 'shell' on any task"):
        ci.require(Permission.SHELL)


def test_unrestricted_and_grantless() -> None:
    assert UNRESTRICTED.may(Permission.SHELL, "anything")
    nobody = Principal("bob", "certificate")
    assert not nobody.may(Permission.READ)
    assert nobody.permissions() == []


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('[[principals]]\nname = "x"\ntoken_sha256 = ["abc"]\n'
         'grants = [{role="admin", tasks=["*"]}]', "principals[0].token_sha256", "lowercase hex"),
        (f'[[principals]]\nname = "x"\ntoken_sha256 = ["{"0" * 64}"]\n'
         'grants = [{role="root", tasks=["*"]}]', "principals[0].grants[0].role", "'root'"),
        (f'[[principals]]\nname = "x"\ntoken_sha256 = ["{"0" * 64}"]\ngrants = [{{role="admin"}}]',
         "principals[0].grants[0].tasks", "required"),
        (f'[[principals]]\nname = "x"\ntoken_sha256 = ["{"0" * 64}"]\n'
         'grants = [{role="admin", tasks=["*", "a-"]}]', "principals[0].grants[0].tasks", '"*"'),
        ('[[principals]]\nname = "x"\ngrants = [{role="admin", tasks=["*"]}]',
         "principals[0]", "needs token_sha256, certificate or jwt_claims"),
        ('[[principals]]\nname = "x"\ncertificate = ["x"]\ngrants = []',
         "principals[0].grants", "non-empty"),
        ('[[principals]]\nname = "x"\ncertificate = ["x"]\nrole = "admin"\n'
         'grants = [{role="admin", tasks=["*"]}]', "principals[0]", "unknown keys ['role']"),
        ('[[principals]]\nname = "x"\njwt_claims = {groups = "a"}\n'
         'grants = [{role="admin", tasks=["*"]}]', "principals[0].jwt_claims", "[jwt]"),
        ('[access]\nhealth = "closed"', "access.health", "'closed'"),
        ('[[principals]]\nname = "x"\ncertificate = ["x"]\n'
         'grants = [{role="admin", tasks=["*"], labels="team=a"}]',
         "principals[0].grants[0].labels", "label selectors need task labels"),
        ('[jwt]\nissuer = "i"\naudience = "a"\njwks_file = "f"\nalgorithms = ["HS256"]',
         "jwt.algorithms", "public-key"),
        ('[jwt]\nissuer = "i"\naudience = "a"', "jwt", "exactly one of jwks_file and jwks_url"),
        ('surprise = 1', "policy", "unknown keys ['surprise']"),
    ],
)  # fmt: skip
def test_bad_policies_name_the_entry(text: str, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_policy(policy_doc(text))
    assert info.value.field == field
    assert reason in info.value.reason


def test_one_credential_cannot_name_two_principals() -> None:
    digest = token_sha256(CI_TOKEN)
    text = "".join(
        f'[[principals]]\nname = "{n}"\ntoken_sha256 = ["{digest}"]\n'
        'grants = [{role="viewer", tasks=["*"]}]\n'
        for n in ("a", "b")
    )
    with pytest.raises(InvalidArgument, match="also names principal 'a'"):
        parse_policy(policy_doc(text))


def test_jwt_claims_map_to_grants() -> None:
    text = """
[jwt]
jwks_file = "/dev/null"
issuer = "https://idp.example"
audience = "peerd"

[[principals]]
name = "payments-team"
jwt_claims = { groups = "payments" }
grants = [{ role = "operator", tasks = ["payments-"] }]

[[principals]]
name = "sre"
jwt_claims = { groups = "sre", tier = "prod" }
grants = [{ role = "admin", tasks = ["*"] }]
"""
    policy = parse_policy(policy_doc(text))
    dev = policy.by_claims({"sub": "dana", "groups": ["payments", "web"]})
    assert dev is not None and (dev.name, dev.source) == ("dana", "jwt")
    assert dev.may(Permission.WRITE, "payments-x") and not dev.may(Permission.SHELL)
    # every claim of a rule must match: "sre" without tier=prod is not an admin
    assert policy.by_claims({"sub": "sam", "groups": ["sre"]}) is None
    sre = policy.by_claims({"sub": "sam", "groups": ["sre"], "tier": "prod"})
    assert sre is not None and sre.may(Permission.SHELL, "anything")
    assert policy.by_claims({"groups": ["payments"]}) is None  # no name claim
