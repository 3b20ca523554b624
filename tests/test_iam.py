from __future__ import annotations

import json
import re

import pytest

from codegen_eval.dataset import Case, PolicyTests
from codegen_eval.grading.checks import CheckStatus, policy_checks
from codegen_eval.grading.iam import ANONYMOUS, evaluate, grammar_errors, parse_date, resolve_variables


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


ALLOW_GET = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}


@pytest.mark.parametrize(
    ("statements", "action", "resource", "context", "decision"),
    [
        ([ALLOW_GET], "s3:GetObject", "arn:aws:s3:::bucket/a.txt", {}, "allow"),
        ([ALLOW_GET], "S3:getobject", "arn:aws:s3:::bucket/a.txt", {}, "allow"),  # actions ignore case
        ([ALLOW_GET], "s3:GetObject", "arn:aws:s3:::Bucket/a.txt", {}, "implicit_deny"),  # resources do not
        ([ALLOW_GET], "s3:PutObject", "arn:aws:s3:::bucket/a.txt", {}, "implicit_deny"),
        ([ALLOW_GET], "s3:GetObject", "arn:aws:s3:::bucket", {}, "implicit_deny"),
        ([ALLOW_GET, {**ALLOW_GET, "Effect": "Deny"}], "s3:GetObject", "arn:aws:s3:::bucket/x", {}, "explicit_deny"),
        ([{"Effect": "Allow", "Action": "s3:Get?bject", "Resource": "*"}], "s3:GetObject", "arn:aws:s3:::b/k", {}, "allow"),
        ([{"Effect": "Allow", "Action": "s3:Get?bject", "Resource": "*"}], "s3:GetObjectAcl", "arn:aws:s3:::b/k", {}, "implicit_deny"),
        ([{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::my.bucket/*"}], "s3:GetObject", "arn:aws:s3:::myxbucket/k", {}, "implicit_deny"),
        ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], "iam:CreateUser", "*", {}, "implicit_deny"),
        ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], "s3:ListBucket", "arn:aws:s3:::b", {}, "allow"),
        ([{"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::secret/*"}], "s3:GetObject", "arn:aws:s3:::secret/k", {}, "implicit_deny"),
        ([{"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::secret/*"}], "s3:GetObject", "arn:aws:s3:::public/k", {}, "allow"),
        ([{**ALLOW_GET, "Condition": {"Bool": {"aws:SecureTransport": "true"}}}], "s3:GetObject", "arn:aws:s3:::bucket/k", {}, "implicit_deny"),
        ([{**ALLOW_GET, "Condition": {"Bool": {"aws:SecureTransport": "true"}}}], "s3:GetObject", "arn:aws:s3:::bucket/k", {"aws:SecureTransport": "true"}, "allow"),
        ([ALLOW_GET, {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}}],
         "s3:GetObject", "arn:aws:s3:::bucket/k", {"aws:RequestedRegion": "eu-west-1"}, "explicit_deny"),
        ([ALLOW_GET, {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}}],
         "s3:GetObject", "arn:aws:s3:::bucket/k", {"aws:RequestedRegion": "us-east-1"}, "allow"),
        ([{**ALLOW_GET, "Condition": {"StringLike": {"s3:prefix": ["home/*"]}}}], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:prefix": "home/a"}, "allow"),
        ([{**ALLOW_GET, "Condition": {"StringEqualsIfExists": {"aws:ResourceTag/env": "dev"}}}], "s3:GetObject", "arn:aws:s3:::bucket/k", {}, "allow"),
    ],
)
def test_evaluation_semantics(statements, action, resource, context, decision):
    assert evaluate(policy(*statements), action, resource, context) == decision


def test_grammar():
    assert grammar_errors(policy(ALLOW_GET)) == []
    errors = grammar_errors({"Version": "2012-10-18", "Statement": [{"Effect": "allow", "Action": "s3:GetObject", "Principal": "*"}], "Extra": 1})
    assert "unknown top-level key 'Extra'" in errors
    assert any("Version must be" in e for e in errors)
    assert any("Effect must be" in e for e in errors)
    assert any("exactly one of Resource / NotResource" in e for e in errors)
    assert any("Principal is not allowed" in e for e in errors)
    assert grammar_errors([]) == ["a policy is a JSON object, not list"]
    assert "Statement[0]: Action has an invalid value: 's3'" in grammar_errors(policy({**ALLOW_GET, "Action": "s3"}))


# --- Rules AWS documents, each test citing the page it follows ---------------------------------------------
# Pages (IAM User Guide, https://docs.aws.amazon.com/IAM/latest/UserGuide/...):
VARIABLES = "reference_policies_variables.html"  # policy variables, escapes, defaults, "no value"
OPERATORS = "reference_policies_elements_condition_operators.html"  # Date, Arn, IfExists, Null
MULTIVALUE = "reference_policies_multi-value-conditions.html"  # ForAllValues / ForAnyValue
PRINCIPAL = "reference_policies_elements_principal.html"  # account, role, session, service, "*"
NOTPRINCIPAL = "reference_policies_elements_notprincipal.html"  # NotPrincipal with Allow / Deny
EVALUATION = "reference_policies_evaluation-logic.html"  # explicit deny wins, default deny


SELF_SERVICE = {"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": "arn:aws:iam::*:user/${aws:username}"}
HOME = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::home/${aws:username}/*"}


def old(*statements):
    return {"Version": "2008-10-17", "Statement": list(statements)}


@pytest.mark.parametrize(
    ("policy_", "resource", "context", "decision"),
    [
        # VARIABLES: "IAM replaces the variable ${aws:username} with the friendly name of the actual current user"
        (policy(SELF_SERVICE), "arn:aws:iam::123456789012:user/alice", {"aws:username": "alice"}, "allow"),
        (policy(SELF_SERVICE), "arn:aws:iam::123456789012:user/bob", {"aws:username": "alice"}, "implicit_deny"),
        # VARIABLES: "Key names are case-insensitive"
        (policy(SELF_SERVICE), "arn:aws:iam::123456789012:user/alice", {"AWS:UserName": "alice"}, "allow"),
        # VARIABLES: without Version 2012-10-17 "variables like ${aws:username} are treated as literal strings"
        (old(SELF_SERVICE), "arn:aws:iam::123456789012:user/alice", {"aws:username": "alice"}, "implicit_deny"),
        (old(SELF_SERVICE), "arn:aws:iam::123456789012:user/${aws:username}", {"aws:username": "alice"}, "allow"),
        # VARIABLES (no value): a Resource with a variable with no value "will not match any resource"
        (policy(SELF_SERVICE), "arn:aws:iam::123456789012:user/alice", {}, "implicit_deny"),
        # ... and a multivalued key gives no single value to substitute
        (policy(SELF_SERVICE), "arn:aws:iam::123456789012:user/alice", {"aws:username": ["alice"]}, "implicit_deny"),
        # VARIABLES: tags as variables, ${aws:PrincipalTag/department}
        (policy({**HOME, "Resource": "arn:aws:s3:::dept/${aws:PrincipalTag/department}/*"}), "arn:aws:s3:::dept/hr/a.pdf",
         {"aws:PrincipalTag/department": "hr"}, "allow"),
        (policy({**HOME, "Resource": "arn:aws:s3:::dept/${aws:PrincipalTag/department}/*"}), "arn:aws:s3:::dept/it/a.pdf",
         {"aws:PrincipalTag/department": "hr"}, "implicit_deny"),
        # VARIABLES ("Specifying default values"): ${aws:userid, 'anonymous'}
        (policy({**HOME, "Resource": "arn:aws:s3:::home/${aws:userid, 'anonymous'}/*"}), "arn:aws:s3:::home/anonymous/x", {}, "allow"),
        (policy({**HOME, "Resource": "arn:aws:s3:::home/${aws:userid, 'anonymous'}/*"}), "arn:aws:s3:::home/AIDA1/x", {"aws:userid": "AIDA1"}, "allow"),
        (policy({**HOME, "Resource": "arn:aws:s3:::home/${aws:userid, 'anonymous'}/*"}), "arn:aws:s3:::home/anonymous/x", {"aws:userid": "AIDA1"}, "implicit_deny"),
        # VARIABLES ("Special characters"): ${*} ${?} ${$} stand for the characters, not wildcards
        (policy({**HOME, "Resource": "arn:aws:s3:::b/${*}/${?}/${$}"}), "arn:aws:s3:::b/*/?/$", {}, "allow"),
        (policy({**HOME, "Resource": "arn:aws:s3:::b/${*}"}), "arn:aws:s3:::b/anything", {}, "implicit_deny"),
        # A value taken from the request is text, not pattern: a user named "*" gets no wildcard.
        (policy(HOME), "arn:aws:s3:::home/alice/a.txt", {"aws:username": "*"}, "implicit_deny"),
        (policy(HOME), "arn:aws:s3:::home/*/a.txt", {"aws:username": "*"}, "allow"),
        # VARIABLES: "only in the resource portion of the ARN ... after the fifth colon"
        (policy({**HOME, "Resource": "arn:aws:s3:us-east-1:${aws:PrincipalAccount}:x"}), "arn:aws:s3:us-east-1:123456789012:x",
         {"aws:PrincipalAccount": "123456789012"}, "implicit_deny"),
        # VARIABLES: the same "will not match any resource" for NotResource: it then excludes nothing
        (policy({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::home/${aws:username}/*"}),
         "arn:aws:s3:::home/alice/a", {}, "allow"),
        (policy({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::home/${aws:username}/*"}),
         "arn:aws:s3:::home/alice/a", {"aws:username": "alice"}, "implicit_deny"),
    ],
)
def test_policy_variables_in_resources(policy_, resource, context, decision):
    action = "iam:CreateAccessKey" if ":iam::" in resource else "s3:GetObject"
    assert evaluate(policy_, action, resource, context) == decision


LIST_OWN_PREFIX = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::home",
                   "Condition": {"StringLike": {"s3:prefix": ["", "home/", "home/${aws:username}/*"]}}}
# VARIABLES ("Policy variables with no value"), the page's own example: deny unless the object's Team tag
# equals the caller's; "Access is explicitly denied when aws:principaltag/Team is not set".
TEAM_DENY = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*",
             "Condition": {"StringNotEquals": {"s3:ExistingObjectTag/Team": "${aws:PrincipalTag/Team}"}}}
TEAM_ALLOW = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*",
              "Condition": {"StringEquals": {"s3:ExistingObjectTag/Team": "${aws:PrincipalTag/Team}"}}}


@pytest.mark.parametrize(
    ("statements", "action", "resource", "context", "decision"),
    [
        # OPERATORS: "You can use a policy variable with the String condition operator" (s3:prefix home dirs)
        ([LIST_OWN_PREFIX], "s3:ListBucket", "arn:aws:s3:::home", {"s3:prefix": "home/alice/docs", "aws:username": "alice"}, "allow"),
        ([LIST_OWN_PREFIX], "s3:ListBucket", "arn:aws:s3:::home", {"s3:prefix": "home/bob/docs", "aws:username": "alice"}, "implicit_deny"),
        ([LIST_OWN_PREFIX], "s3:ListBucket", "arn:aws:s3:::home", {"s3:prefix": "home/", "aws:username": "alice"}, "allow"),
        # A variable with no value drops that value; the other values still count.
        ([LIST_OWN_PREFIX], "s3:ListBucket", "arn:aws:s3:::home", {"s3:prefix": "home/"}, "allow"),
        ([LIST_OWN_PREFIX], "s3:ListBucket", "arn:aws:s3:::home", {"s3:prefix": "home/alice/x"}, "implicit_deny"),
        # VARIABLES (no value): "StringEquals or StringLike do not match" ...
        ([TEAM_ALLOW], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:ExistingObjectTag/Team": "red"}, "implicit_deny"),
        ([TEAM_ALLOW], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:ExistingObjectTag/Team": "red", "aws:PrincipalTag/Team": "red"}, "allow"),
        # ... "Inverted condition operators like StringNotEquals ... do match against a null value":
        # the surprising one, an explicit Deny whose variable does not resolve still denies.
        ([TEAM_ALLOW, TEAM_DENY], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:ExistingObjectTag/Team": "red"}, "explicit_deny"),
        ([TEAM_ALLOW, TEAM_DENY], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:ExistingObjectTag/Team": "red", "aws:PrincipalTag/Team": "blue"}, "explicit_deny"),
        ([TEAM_ALLOW, TEAM_DENY], "s3:GetObject", "arn:aws:s3:::bucket/k", {"s3:ExistingObjectTag/Team": "red", "aws:PrincipalTag/Team": "red"}, "allow"),
        # ... while a Deny whose Resource holds the unresolved variable matches nothing and denies nothing.
        ([ALLOW_GET, {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/${aws:username}/*"}],
         "s3:GetObject", "arn:aws:s3:::bucket/alice/k", {}, "allow"),
        ([ALLOW_GET, {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/${aws:username}/*"}],
         "s3:GetObject", "arn:aws:s3:::bucket/alice/k", {"aws:username": "alice"}, "explicit_deny"),
        # OPERATORS: "You can not use a policy variable with the Numeric/Date/IP address ... operator": literal there
        ([{**ALLOW_GET, "Condition": {"StringEquals": {"aws:PrincipalTag/cc": "${aws:ResourceTag/cc}"}}}],
         "s3:GetObject", "arn:aws:s3:::bucket/k", {"aws:PrincipalTag/cc": "42", "aws:ResourceTag/cc": "42"}, "allow"),
    ],
)
def test_policy_variables_in_conditions(statements, action, resource, context, decision):
    assert evaluate(policy(*statements), action, resource, context) == decision


def test_variable_syntax():
    context = {"aws:username": "alice"}
    assert resolve_variables("a/${aws:username}/*", context) == ((True, "a/"), (False, "alice"), (True, "/*"))
    assert resolve_variables("${ AWS:USERNAME }", context) == ((False, "alice"),)
    assert resolve_variables("${aws:userid, 'it''s'}", context) == ((False, "it's"),)
    assert resolve_variables("${aws:userid}", context) is None
    assert resolve_variables("no variable ${", context) == ((True, "no variable ${"),)


# OPERATORS ("Date condition operators"): "W3C implementations of the ISO 8601 date formats or in epoch (UNIX) time"
WINDOW = {**ALLOW_GET, "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"},
                                     "DateLessThan": {"aws:CurrentTime": "2026-06-30T23:59:59Z"}}}


@pytest.mark.parametrize(
    ("condition", "context", "decision"),
    [
        (WINDOW["Condition"], {"aws:CurrentTime": "2026-03-01T12:00:00Z"}, "allow"),
        (WINDOW["Condition"], {"aws:CurrentTime": "2025-12-31T23:59:59Z"}, "implicit_deny"),
        (WINDOW["Condition"], {"aws:CurrentTime": "2026-07-01T00:00:00Z"}, "implicit_deny"),
        (WINDOW["Condition"], {"aws:CurrentTime": "2026-01-01T00:00:00Z"}, "implicit_deny"),  # GreaterThan is strict
        (WINDOW["Condition"], {"aws:CurrentTime": "2026-03-01T14:00:00+02:00"}, "allow"),  # time zones compare as instants
        (WINDOW["Condition"], {}, "implicit_deny"),  # "If the key ... is not present in the request context, the values do not match"
        ({"DateLessThanEquals": {"aws:EpochTime": "1767225600"}}, {"aws:EpochTime": "1767225600"}, "allow"),  # epoch seconds
        ({"DateLessThan": {"aws:EpochTime": 1767225600}}, {"aws:EpochTime": "1767225600"}, "implicit_deny"),
        ({"DateEquals": {"aws:CurrentTime": "2026-01-01"}}, {"aws:CurrentTime": "2026-01-01T00:00:00Z"}, "allow"),
        ({"DateNotEquals": {"aws:CurrentTime": "2026-01-01"}}, {"aws:CurrentTime": "2026-01-02"}, "allow"),
        ({"DateGreaterThanEquals": {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"}}, {"aws:CurrentTime": "2026-02-01"}, "implicit_deny"),
        ({"DateGreaterThanIfExists": {"aws:TokenIssueTime": "2026-01-01T00:00:00Z"}}, {}, "allow"),
    ],
)
def test_date_operators(condition, context, decision):
    assert evaluate(policy({**ALLOW_GET, "Condition": condition}), "s3:GetObject", "arn:aws:s3:::bucket/k", context) == decision


def test_date_parsing_and_grammar():
    assert parse_date("2026-01-01T00:00:00Z") == parse_date("1767225600") == parse_date("2026-01-01")
    assert parse_date("31/12/2026") is None
    errors = grammar_errors(policy({**ALLOW_GET, "Condition": {"DateLessThan": {"aws:CurrentTime": "next tuesday"}}}))
    assert errors == ["Statement[0]: Condition DateLessThan aws:CurrentTime: 'next tuesday' is not an ISO 8601 date or epoch seconds"]
    assert grammar_errors(policy({**ALLOW_GET, "Condition": {"DateBefore": {"aws:CurrentTime": "2026"}}})) == [
        "Statement[0]: unknown condition operator 'DateBefore'"]


@pytest.mark.parametrize(
    ("condition", "context", "decision"),
    [
        # OPERATORS ("ARN"): "Each of the six colon-delimited components of the ARN is checked separately";
        # the page's own example matches with StringLike but not with ArnLike.
        ({"StringLike": {"aws:SourceArn": "arn:aws:someservice:*:111122223333:finance/*"}},
         {"aws:SourceArn": "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"}, "allow"),
        ({"ArnLike": {"aws:SourceArn": "arn:aws:someservice:*:111122223333:finance/*"}},
         {"aws:SourceArn": "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt"}, "implicit_deny"),
        # "The ArnEquals and ArnLike condition operators behave identically": wildcards in ArnEquals too
        ({"ArnEquals": {"aws:SourceArn": "arn:aws:sns:*:123456789012:alerts"}}, {"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:alerts"}, "allow"),
        ({"ArnNotEquals": {"aws:SourceArn": "arn:aws:sns:*:123456789012:alerts"}}, {"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:alerts"}, "implicit_deny"),
        # MULTIVALUE: ForAllValues is true when the request has no values, ForAnyValue false
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "team"]}}, {}, "allow"),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "team"]}}, {"aws:TagKeys": ["env", "owner"]}, "implicit_deny"),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}}, {}, "implicit_deny"),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["env", "team"]}}, {"aws:TagKeys": ["owner", "team"]}, "allow"),
        ({"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret"]}}, {"aws:TagKeys": ["env", "team"]}, "allow"),
        ({"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret"]}}, {"aws:TagKeys": ["env", "secret"]}, "implicit_deny"),
        # OPERATORS: IP ranges in CIDR form, IPv6 included
        ({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:DB8:1234:5678::/64"]}}, {"aws:SourceIp": "2001:db8:1234:5678::1"}, "allow"),
        ({"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "198.51.100.7"}, "allow"),
    ],
)
def test_arn_set_and_ip_operators(condition, context, decision):
    assert evaluate(policy({**ALLOW_GET, "Condition": condition}), "s3:GetObject", "arn:aws:s3:::bucket/k", context) == decision


# --- resource-based policies ------------------------------------------------------------------------------

ACCOUNT_B = "111122223333"
ALICE = ("AWS", f"arn:aws:iam::{ACCOUNT_B}:user/alice")
BOB = ("AWS", f"arn:aws:iam::{ACCOUNT_B}:user/bob")
AUDIT_ROLE = ("AWS", f"arn:aws:iam::{ACCOUNT_B}:role/audit")
AUDIT_SESSION = ("AWS", f"arn:aws:sts::{ACCOUNT_B}:assumed-role/audit/jane")
STRANGER = ("AWS", "arn:aws:iam::999999999999:user/mallory")
LAMBDA = ("Service", "lambda.amazonaws.com")
OBJECT = "arn:aws:s3:::shared-bucket/report.csv"


def bucket(principal_key, principal, effect="Allow", **extra):
    return policy({"Effect": effect, principal_key: principal, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-bucket/*", **extra})


@pytest.mark.parametrize(
    ("policy_", "principal", "decision"),
    [
        # PRINCIPAL: an account id and the account's root ARN "behave the same way ... delegate permissions to the account"
        (bucket("Principal", {"AWS": ACCOUNT_B}), ALICE, "allow"),
        (bucket("Principal", {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}), AUDIT_SESSION, "allow"),
        (bucket("Principal", {"AWS": ACCOUNT_B}), STRANGER, "implicit_deny"),
        # PRINCIPAL: a user by ARN; the user name part is case sensitive
        (bucket("Principal", {"AWS": ALICE[1]}), ALICE, "allow"),
        (bucket("Principal", {"AWS": ALICE[1]}), BOB, "implicit_deny"),
        (bucket("Principal", {"AWS": ALICE[1].replace("alice", "Alice")}), ALICE, "implicit_deny"),
        # PRINCIPAL: a role principal covers the role's sessions; a session principal names one session
        (bucket("Principal", {"AWS": AUDIT_ROLE[1]}), AUDIT_SESSION, "allow"),
        (bucket("Principal", {"AWS": f"arn:aws:iam::{ACCOUNT_B}:role/team/audit"}), AUDIT_SESSION, "allow"),
        (bucket("Principal", {"AWS": AUDIT_SESSION[1]}), ("AWS", f"arn:aws:sts::{ACCOUNT_B}:assumed-role/audit/other"), "implicit_deny"),
        # PRINCIPAL: services by name
        (bucket("Principal", {"Service": "lambda.amazonaws.com"}), LAMBDA, "allow"),
        (bucket("Principal", {"Service": "lambda.amazonaws.com"}), ("Service", "ec2.amazonaws.com"), "implicit_deny"),
        # PRINCIPAL: "Principal": "*" and {"AWS": "*"} are equivalent and include anonymous users
        (bucket("Principal", "*"), ANONYMOUS, "allow"),
        (bucket("Principal", {"AWS": "*"}), ANONYMOUS, "allow"),
        (bucket("Principal", {"AWS": ACCOUNT_B}), ANONYMOUS, "implicit_deny"),
        # NOTPRINCIPAL with Allow: "allows all principals except the one named ... you might grant access to anonymous users"
        (bucket("NotPrincipal", {"AWS": ALICE[1]}), ANONYMOUS, "allow"),
        (bucket("NotPrincipal", {"AWS": ALICE[1]}), STRANGER, "allow"),
        (bucket("NotPrincipal", {"AWS": ALICE[1]}), ALICE, "implicit_deny"),
        (bucket("NotPrincipal", {"AWS": ACCOUNT_B}), AUDIT_SESSION, "implicit_deny"),  # naming the account excludes its members
        # NOTPRINCIPAL with Deny: everyone but the named is denied, and the named must come with their account
        # (and role): "Otherwise, the policy might deny access to the entire account containing the principal".
        (bucket("NotPrincipal", {"AWS": [BOB[1], f"arn:aws:iam::{ACCOUNT_B}:root"]}, "Deny"), BOB, "implicit_deny"),
        (bucket("NotPrincipal", {"AWS": [BOB[1], f"arn:aws:iam::{ACCOUNT_B}:root"]}, "Deny"), ALICE, "explicit_deny"),
        (bucket("NotPrincipal", {"AWS": [BOB[1]]}, "Deny"), BOB, "explicit_deny"),
        (bucket("NotPrincipal", {"AWS": [AUDIT_SESSION[1], AUDIT_ROLE[1], ACCOUNT_B]}, "Deny"), AUDIT_SESSION, "implicit_deny"),
        (bucket("NotPrincipal", {"AWS": [AUDIT_SESSION[1], ACCOUNT_B]}, "Deny"), AUDIT_SESSION, "explicit_deny"),
        (bucket("NotPrincipal", {"AWS": [BOB[1], ACCOUNT_B]}, "Deny"), ANONYMOUS, "explicit_deny"),
        # PRINCIPAL: the recommended alternative, "Principal": "*" with ArnNotEquals on aws:PrincipalArn,
        # which a request's principal supplies (a role session's is its role's ARN)
        (bucket("Principal", "*", "Deny", Condition={"ArnNotEquals": {"aws:PrincipalArn": AUDIT_ROLE[1]}}), AUDIT_SESSION, "implicit_deny"),
        (bucket("Principal", "*", "Deny", Condition={"ArnNotEquals": {"aws:PrincipalArn": AUDIT_ROLE[1]}}), ALICE, "explicit_deny"),
        (bucket("Principal", "*", Condition={"StringEquals": {"aws:PrincipalAccount": ACCOUNT_B}}), BOB, "allow"),
        (bucket("Principal", "*", Condition={"StringEquals": {"aws:PrincipalAccount": ACCOUNT_B}}), STRANGER, "implicit_deny"),
    ],
)
def test_bucket_policy_principals(policy_, principal, decision):
    assert evaluate(policy_, "s3:GetObject", OBJECT, {}, principal) == decision


def test_bucket_policy_evaluation_explicit_deny_wins():
    # EVALUATION: "An explicit deny overrides an explicit allow"; here the classic public-read-but-TLS-only policy
    doc = policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": ["arn:aws:s3:::site", "arn:aws:s3:::site/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    )
    assert evaluate(doc, "s3:GetObject", "arn:aws:s3:::site/i.html", {"aws:SecureTransport": "true"}, ANONYMOUS) == "allow"
    assert evaluate(doc, "s3:GetObject", "arn:aws:s3:::site/i.html", {"aws:SecureTransport": "false"}, ANONYMOUS) == "explicit_deny"
    assert evaluate(doc, "s3:PutObject", "arn:aws:s3:::site/i.html", {"aws:SecureTransport": "true"}, ANONYMOUS) == "implicit_deny"


TRUST_LAMBDA = policy({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})
TRUST_PARTNER = policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"sts:ExternalId": "Unique-7d3f"}}})


def test_trust_policies():
    assert evaluate(TRUST_LAMBDA, "sts:AssumeRole", None, {}, LAMBDA) == "allow"
    assert evaluate(TRUST_LAMBDA, "sts:AssumeRole", None, {}, ("Service", "ec2.amazonaws.com")) == "implicit_deny"
    assert evaluate(TRUST_LAMBDA, "sts:AssumeRole", None, {}, ALICE) == "implicit_deny"
    assert evaluate(TRUST_LAMBDA, "sts:TagSession", None, {}, LAMBDA) == "implicit_deny"
    partner = ("AWS", "arn:aws:sts::999988887777:assumed-role/integrator/x")
    assert evaluate(TRUST_PARTNER, "sts:AssumeRole", None, {"sts:ExternalId": "Unique-7d3f"}, partner) == "allow"
    assert evaluate(TRUST_PARTNER, "sts:AssumeRole", None, {}, partner) == "implicit_deny"  # confused deputy
    assert evaluate(TRUST_PARTNER, "sts:AssumeRole", "arn:aws:iam::123456789012:role/r", {"sts:ExternalId": "Unique-7d3f"}, partner) == "allow"


def test_grammar_by_policy_type():
    allow_get = {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_B}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    assert grammar_errors(policy(allow_get), "bucket") == []
    assert grammar_errors(policy(allow_get), "identity") == ["Statement[0]: Principal is not allowed in an identity policy"]
    assert grammar_errors(policy(ALLOW_GET), "bucket") == ["Statement[0]: exactly one of Principal / NotPrincipal is required in a bucket policy"]
    assert grammar_errors(policy({**allow_get, "Resource": "arn:aws:dynamodb:us-east-1:1:table/t"}), "bucket") == [
        "Statement[0]: Resource has an invalid value: 'arn:aws:dynamodb:us-east-1:1:table/t'"]
    # PRINCIPAL: "You cannot use a wildcard to match part of a principal name or ARN"
    assert grammar_errors(policy({**allow_get, "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:role/*"}}), "bucket") == [
        f"Statement[0]: Principal.AWS 'arn:aws:iam::{ACCOUNT_B}:role/*': a wildcard cannot match part of a principal"]
    assert grammar_errors(policy({**allow_get, "Principal": {"Group": "devs"}}), "bucket") == [
        "Statement[0]: Principal has an unknown principal type 'Group'"]
    assert grammar_errors(TRUST_LAMBDA, "trust") == []
    assert grammar_errors(policy({**TRUST_LAMBDA["Statement"][0], "Resource": "*"}), "trust") == [
        "Statement[0]: Resource is not allowed in a role trust policy"]
    assert grammar_errors(policy({**TRUST_LAMBDA["Statement"][0], "Action": "s3:GetObject"}), "trust") == [
        "Statement[0]: Action has an invalid value: 's3:GetObject'"]
    assert grammar_errors(policy({"Effect": "Allow", "Action": "sts:AssumeRole"}), "trust") == [
        "Statement[0]: exactly one of Principal / NotPrincipal is required in a role trust policy"]


def test_probe_shape_per_policy_type():
    trust = PolicyTests.model_validate({"policy_type": "trust", "allow": [{"action": "sts:AssumeRole", "principal": {"Service": "ec2.amazonaws.com"}}]})
    assert trust.allow[0].resource is None
    for tests, message in [
        ({"policy_type": "bucket", "allow": [{"action": "s3:GetObject", "resource": OBJECT}]}, "allow[0]: a bucket policy's probe needs a principal"),
        ({"allow": [{"action": "s3:GetObject", "resource": OBJECT, "principal": "anonymous"}]}, "allow[0]: an identity policy's probe has no principal"),
        ({"deny": [{"action": "s3:GetObject"}]}, "deny[0]: the probe needs a resource"),
        ({"policy_type": "trust", "allow": [{"action": "sts:AssumeRole", "principal": {"AWS": "alice"}}]}, "is not an account id or an IAM/STS ARN"),
        ({"policy_type": "trust", "allow": [{"action": "sts:AssumeRole", "principal": {"AWS": ACCOUNT_B, "Service": "x"}}]}, "exactly one of AWS"),
        ({"policy_type": "session", "allow": []}, "policy_type"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            PolicyTests.model_validate(tests)


def test_policy_checks_for_a_trust_policy():
    case = Case(id="t", task="trust lambda", format="json", expected=json.dumps(TRUST_LAMBDA), solution_criteria="c", difficulty="easy",
                tests={"policy_type": "trust", "allow": [{"action": "sts:AssumeRole", "principal": {"Service": "lambda.amazonaws.com"}}],
                       "deny": [{"action": "sts:AssumeRole", "principal": {"Service": "ec2.amazonaws.com"}},
                                {"action": "sts:AssumeRole", "principal": "anonymous"}]})
    checks = {c.name: c for c in policy_checks(case, case.expected)}
    assert checks["policy_grammar"].message == "valid role trust policy"
    assert checks["parliament"].status is CheckStatus.SKIPPED  # it reads a trust policy's missing Resource as malformed
    assert checks["access"].status is CheckStatus.OK and checks["access"].message == "3 of 3 requests decided right"
    public = json.dumps(policy({"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}))
    access = {c.name: c for c in policy_checks(case, public)}["access"]
    assert access.status is CheckStatus.TEST_FAIL and access.fraction == pytest.approx(1 / 3)
    assert "sts:AssumeRole by anonymous should be denied, got allow" in access.message
    identity = {c.name: c for c in policy_checks(case, json.dumps(policy(ALLOW_GET)))}
    assert identity["policy_grammar"].status is CheckStatus.TEST_FAIL


# --- model text that must not stall or crash the main process (issue 27) ----------------------------------


def within(seconds: float, fn, *args):
    """fn(*args), asserting it returned within `seconds` (a backtracking matcher takes minutes)."""
    import time

    start = time.perf_counter()
    result = fn(*args)
    assert time.perf_counter() - start < seconds, f"{fn.__name__} took {time.perf_counter() - start:.1f} s"
    return result


def test_wildcards_and_variables_never_backtrack():
    value = "arn:aws:s3:::my-data-bucket/reports/2026.csv"
    stars = policy({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::" + "*?" * 16 + "*Z"})
    assert within(0.5, evaluate, stars, "s3:GetObject", value) == "implicit_deny"  # a regex took ~30 min
    assert within(0.5, evaluate, {**stars, "Statement": [{**stars["Statement"][0], "Resource": "arn:aws:s3:::" + "*?" * 16 + "*v"}]},
                  "s3:GetObject", value) == "allow"
    assert within(0.5, resolve_variables, "${a" + " " * 60_000 + "'}", {}) is None
    assert within(0.5, resolve_variables, "${" * 45_000, {}) == (((True, "${" * 45_000),))
    liked = policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"StringLike": {"s3:prefix": "*a" * 30 + "b"}}})
    assert within(0.5, evaluate, liked, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "a" * 5000}) == "implicit_deny"


@pytest.mark.parametrize(("pattern", "value", "arn", "matches"), [
    ("a*b?c", "aXXbYc", False, True), ("*", "", False, True), ("a**", "a", False, True), ("?", "", False, False),
    ("*a*b*", "xxbxxa", False, False), ("a*a", "a", False, False), ("*x*y*z", "xyzxyz", False, True),
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b/x:y", True, True),  # past the fifth colon a star takes colons
    ("arn:*:s3:::b", "arn:aws:x:s3:::b", True, False),  # before it, not
    ("arn:aws:iam::*:role/r?", "arn:aws:iam::123456789012:role/r1", True, True),
])
def test_the_wildcard_matcher_agrees_with_the_regex_it_replaced(pattern, value, arn, matches):
    from codegen_eval.grading.wildcards import glob_match

    body, colons = [], 0
    for c in pattern:
        inside = arn and colons < 5
        body.append(("[^:]*" if inside else ".*") if c == "*" else ("[^:]" if inside else ".") if c == "?" else re.escape(c))
        colons += c == ":"
    assert (re.fullmatch("".join(body), value, re.DOTALL) is not None) == matches
    assert glob_match(((True, pattern),), value, arn=arn) == matches


def test_dates_past_what_python_holds_are_not_dates():
    assert parse_date("9" * 40) is None and parse_date("999999999999") is None and parse_date("9999-12-31T23:59:60Z") is None
    assert parse_date("99999999999").year == 5138  # still inside datetime
    dated = policy({**ALLOW_GET, "Condition": {"DateLessThan": {"aws:CurrentTime": "9" * 40}}})
    assert grammar_errors(dated) == ["Statement[0]: Condition DateLessThan aws:CurrentTime: '9999999999999999999999999999999999999999' is not an ISO 8601 date or epoch seconds"]


def test_a_null_condition_with_no_value_decides_without_raising():
    empty = policy({**ALLOW_GET, "Condition": {"Null": {"aws:TokenIssueTime": []}}})
    assert evaluate(empty, "s3:GetObject", "arn:aws:s3:::bucket/k") == "implicit_deny"


@pytest.mark.parametrize(("sid", "policy_type", "error"), [
    ("AllowRead1", "identity", None), ("", "identity", None),
    ({"a": 1}, "identity", "Sid must be a string, got {'a': 1}"), (7, "bucket", "Sid must be a string, got 7"),
    ("read & write", "identity", "Sid 'read & write': IAM takes only the letters A-Z, a-z and digits 0-9"),
    ("Stmt-1", "trust", "Sid 'Stmt-1': IAM takes only the letters A-Z, a-z and digits 0-9"),
    ("Allow GET requests from example.com.", "bucket", None),  # S3's own examples use spaces and dots
])
def test_sid_is_a_string_and_iam_takes_letters_and_digits_only(sid, policy_type, error):
    statement = {**ALLOW_GET, "Sid": sid}
    if policy_type == "trust":
        statement = {"Sid": sid, "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    elif policy_type == "bucket":
        statement = {**statement, "Principal": "*"}
    assert grammar_errors(policy(statement), policy_type) == ([f"Statement[0]: {error}"] if error else [])


def test_messages_about_huge_or_deep_values_stay_short():
    deep: list = []
    for _ in range(900):
        deep = [deep]
    errors = grammar_errors(policy({**ALLOW_GET, "Action": deep}) | {"Version": "x" * 100_000})
    assert errors and all(len(e) < 200 for e in errors)
