from __future__ import annotations

import pytest

from codegen_eval.grading.iam import evaluate, grammar_errors


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
