"""Checks that see how the candidate used AWS: `def check(candidate, aws)`.

The record is kept by the job's AWS endpoint, a process of its own: each test grades two candidates
through the real sandbox on the same data, one that uses AWS as the task says and one that does not,
and only the first passes. Raw HTTP is recorded too; the candidate cannot reach moto's control plane or
a service the case does not use; a check that spies on botocore is refused before any model call.
"""

from __future__ import annotations

import json

import pytest

from codegen_eval.dataset import Case, DatasetError, load_dataset
from codegen_eval.grading.checks import run_checks
from codegen_eval.grading.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox():
    pool = Sandbox(slots=1)
    yield pool
    pool.close()


def grade(sandbox: Sandbox, entry: str, reference: str, check: str, candidate: str) -> tuple[str, str]:
    case = Case(id="t", task="t", format="python", expected=reference, solution_criteria="c", difficulty="easy",
                tests={"entry_point": entry, "check": check})
    tests = run_checks(case, candidate, sandbox)[-1]
    return tests.status, tests.message


PAGING_CHECK = '''
def check(candidate, aws):
    import boto3
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    for i in range(10):
        s3.put_object(Bucket="bkt", Key=f"k{i:02d}", Body=b"x")
    # Cap every page at 4 keys, so paging shows on small data.
    aws.on("ListObjectsV2", lambda params, forward: forward({**params, "MaxKeys": min(params.get("MaxKeys", 1000), 4)}))
    assert sorted(candidate("bkt")) == [f"k{i:02d}" for i in range(10)]
    lists = [c for c in aws.calls() if c["operation"] == "ListObjectsV2"]
    assert len(lists) == 3 and {c["params"]["Bucket"] for c in lists} == {"bkt"}
    assert "ContinuationToken" in lists[1]["params"]
    assert {c["service"] for c in aws.calls()} == {"s3"}  # the check's own PutObject calls are not recorded
'''
PAGER = '''
import boto3
def keys(bucket):
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
'''
ONE_CALL = '''
import boto3
def keys(bucket):
    return [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
'''


def test_a_candidate_that_pages_is_told_from_one_that_does_not(sandbox):
    assert grade(sandbox, "keys", PAGER, PAGING_CHECK, PAGER) == ("OK", "check(candidate) passed")
    status, message = grade(sandbox, "keys", PAGER, PAGING_CHECK, ONE_CALL)
    assert status == "TEST_FAIL" and "assert sorted(candidate" in message


QUERY_CHECK = '''
def check(candidate, aws):
    import boto3
    db = boto3.client("dynamodb", region_name="us-east-1")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])
    for pk, sk in [("a", "1"), ("a", "2"), ("b", "1")]:
        db.put_item(TableName="t", Item={"pk": {"S": pk}, "sk": {"S": sk}})
    assert sorted(candidate("t", "a")) == ["1", "2"]
    operations = [c["operation"] for c in aws.calls()]
    assert "Scan" not in operations, operations
    query = next(c for c in aws.calls() if c["operation"] == "Query")
    assert query["params"]["TableName"] == "t" and "KeyConditionExpression" in query["params"]
'''
QUERY = '''
import boto3
from boto3.dynamodb.conditions import Key
def sort_keys(table, pk):
    return [i["sk"] for i in boto3.resource("dynamodb").Table(table).query(KeyConditionExpression=Key("pk").eq(pk))["Items"]]
'''
SCAN = '''
import boto3
def sort_keys(table, pk):
    return [i["sk"] for i in boto3.resource("dynamodb").Table(table).scan()["Items"] if i["pk"] == pk]
'''


def test_query_is_told_from_scan(sandbox):
    assert grade(sandbox, "sort_keys", QUERY, QUERY_CHECK, QUERY)[0] == "OK"
    status, message = grade(sandbox, "sort_keys", QUERY, QUERY_CHECK, SCAN)
    assert status == "TEST_FAIL" and "'Scan'" in message


BATCH_CHECK = '''
def check(candidate, aws):
    import boto3
    db = boto3.client("dynamodb", region_name="us-east-1")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    seen = []

    def batch(params, forward):
        (table, requests), = params["RequestItems"].items()
        seen.append(len(requests))
        if len(requests) > 25:
            raise aws.Error("ValidationException", "Too many items requested for the BatchWriteItem call", 400)
        if len(seen) == 1:  # the first batch: half of it comes back unprocessed
            answer = forward({"RequestItems": {table: requests[:10]}})
            answer["UnprocessedItems"] = {table: requests[10:]}
            return answer
        return forward()

    aws.on("BatchWriteItem", batch)
    candidate("t", [f"item-{i}" for i in range(30)])
    stored = sorted(i["pk"]["S"] for i in db.scan(TableName="t")["Items"])
    assert stored == sorted(f"item-{i}" for i in range(30)), f"{len(stored)} of 30 items stored"
    assert max(seen) <= 25 and len([c for c in aws.calls() if c["operation"] == "BatchWriteItem"]) == len(seen)
'''
RETRIES = '''
import boto3
def write_all(table, keys):
    client = boto3.client("dynamodb")
    requests = [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys]
    for start in range(0, len(requests), 25):
        pending = {table: requests[start:start + 25]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
'''
NO_RETRY = '''
import boto3
def write_all(table, keys):
    client = boto3.client("dynamodb")
    requests = [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys]
    for start in range(0, len(requests), 25):
        client.batch_write_item(RequestItems={table: requests[start:start + 25]})
'''
ONE_BATCH = '''
import boto3
def write_all(table, keys):
    boto3.client("dynamodb").batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys]})
'''


def test_unprocessed_items_and_refused_batches_reach_the_candidate(sandbox):
    assert grade(sandbox, "write_all", RETRIES, BATCH_CHECK, RETRIES)[0] == "OK"
    status, message = grade(sandbox, "write_all", RETRIES, BATCH_CHECK, NO_RETRY)
    assert status == "TEST_FAIL" and "15 of 30 items stored" in message
    status, message = grade(sandbox, "write_all", RETRIES, BATCH_CHECK, ONE_BATCH)
    assert status == "TEST_FAIL" and "ValidationException" in message


RAW_CHECK = '''
def check(candidate, aws):
    import boto3
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="keep")
    statuses = candidate()
    assert statuses["list"] == 200, statuses
    assert statuses["reset"] == statuses["data"] == statuses["cloudformation"] == 403, statuses
    assert [b["Name"] for b in boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"]] == ["keep"]
    record = aws.calls()
    assert record[0] == {"service": "s3", "operation": "ListBuckets", "params": {}}, record[0]
    assert len(record) == 4
'''
RAW = '''
import os, urllib.request, urllib.error
AUTH = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{}/aws4_request, SignedHeaders=host, Signature=0"
def raw():
    def status(path, service, method="GET", body=None):
        request = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + path, data=body, method=method,
                                         headers={"Authorization": AUTH.format(service)})
        try:
            return urllib.request.urlopen(request).status
        except urllib.error.HTTPError as exc:
            return exc.code
    return {
        "list": status("/", "s3"),
        "reset": status("/moto-api/reset", "s3", "POST", b""),
        "data": status("/moto-api/data.json", "s3"),
        "cloudformation": status("/", "cloudformation", "POST", b"Action=CreateStack&StackName=x&TemplateBody=a"),
    }
'''
RAW_REFERENCE = 'import boto3\ndef raw():\n    return boto3.client("s3").list_buckets()\n'


def test_raw_http_is_recorded_and_the_control_plane_and_other_services_are_refused(sandbox):
    assert grade(sandbox, "raw", RAW_REFERENCE, RAW_CHECK, RAW) == ("OK", "check(candidate) passed")


TAMPER = '''
import os, socket
def tamper():
    # The record lives in another process and uid: the candidate holds no descriptor to it, and may not signal it.
    held = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    killed = []
    for pid in range(1, 4096):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 9)
            killed.append(pid)
        except OSError:
            pass
    return {"fds": held, "killed": killed}
'''
TAMPER_CHECK = '''
def check(candidate, aws):
    import boto3
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    s3.list_objects_v2(Bucket="bkt")
    seen = candidate()
    assert seen["killed"] == [] and seen["fds"] == [0, 1, 2, 3, 4], seen  # 3: its socket; 4: the listing itself
    assert aws.calls() == [], aws.calls()  # the check's own calls are never in the record
    s3.head_bucket(Bucket="bkt")
'''


def test_the_candidate_cannot_reach_the_record(sandbox):
    assert grade(sandbox, "tamper", RAW_REFERENCE.replace("raw", "tamper"), TAMPER_CHECK, TAMPER) == ("OK", "check(candidate) passed")


def test_a_check_that_spies_on_botocore_is_refused_with_the_aws_parameter_named(tmp_path):
    spy = '''def check(candidate):
    import boto3
    calls = []
    client = boto3.client("s3")
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append(kw))
    candidate("bkt")
'''
    row = {"id": "spy", "task": "t", "format": "python", "expected": ONE_CALL, "solution_criteria": "c", "difficulty": "easy",
           "tests": {"entry_point": "keys", "check": spy}}
    path = tmp_path / "spy.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError) as error:
        load_dataset(path)
    text = str(error.value)
    assert f"{path}:1" in text and "check line 5 registers an event hook" in text and "def check(candidate, aws)" in text


ROUND_TRIPS = [  # (service, operation, params): every protocol botocore speaks, and the REST look-alikes
    ("s3", "PutObject", {"Bucket": "bkt", "Key": "a/b", "Body": b"xyz", "ContentType": "text/plain"}),
    ("s3", "CopyObject", {"Bucket": "bkt", "Key": "k", "CopySource": "src/k", "MetadataDirective": "REPLACE"}),
    ("s3", "UploadPart", {"Bucket": "b", "Key": "k", "PartNumber": 1, "UploadId": "u", "Body": b"1"}),
    ("s3", "UploadPartCopy", {"Bucket": "b", "Key": "k", "PartNumber": 1, "UploadId": "u", "CopySource": "s/k"}),
    ("s3", "ListObjectsV2", {"Bucket": "b", "MaxKeys": 4, "ContinuationToken": "t"}),
    ("s3", "ListObjects", {"Bucket": "b", "Marker": "m"}),
    ("s3", "DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "a"}, {"Key": "b"}]}}),
    ("s3", "PutBucketTagging", {"Bucket": "b", "Tagging": {"TagSet": [{"Key": "a", "Value": "b"}]}}),
    ("iam", "ListUsers", {"PathPrefix": "/a/", "MaxItems": 5}),
    ("sns", "Publish", {"TopicArn": "arn", "Message": "m", "MessageAttributes": {"a": {"DataType": "String", "StringValue": "v"}}}),
    ("ec2", "DescribeInstances", {"Filters": [{"Name": "tag:Env", "Values": ["prod", "dev"]}], "MaxResults": 5}),
    ("sqs", "SendMessageBatch", {"QueueUrl": "q", "Entries": [{"Id": "1", "MessageBody": "b"}]}),
    ("dynamodb", "Query", {"TableName": "t", "KeyConditionExpression": "pk = :v", "ExpressionAttributeValues": {":v": {"S": "a"}}, "Limit": 2}),
    ("lambda", "Invoke", {"FunctionName": "f", "Payload": b"{}"}),
    ("kinesis", "PutRecords", {"StreamName": "s", "Records": [{"Data": b"abc", "PartitionKey": "p"}]}),
    ("cloudwatch", "PutMetricData", {"Namespace": "n", "MetricData": [{"MetricName": "m", "Value": 1.5}]}),  # JSON, not its CBOR
]


@pytest.mark.parametrize(("service", "operation", "params"), ROUND_TRIPS, ids=[f"{s}.{o}" for s, o, _ in ROUND_TRIPS])
def test_requests_decode_to_botocore_member_names(service, operation, params):
    import hashlib

    from codegen_eval.grading import aws_answers, aws_wire

    sent = aws_answers.serialize(service, operation, params)
    path, _, query = sent["url_path"].partition("?")
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    received = aws_wire.Request(sent["method"], path, "&".join(q for q in (query, sent["query_string"]) if q), headers, sent["body"])
    uploads = {k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in params.items() if isinstance(v, bytes)}
    expected = {**params, **uploads}
    if service == "kinesis":
        expected["Records"] = [{"Data": {"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}, "PartitionKey": "p"}]
    assert aws_wire.decode(service, received) == (operation, expected)


# Requests written so that the record and moto would disagree on the operation (found by a red team):
# refused, so a disguised Scan or a batch hidden from its handler changes nothing.
DISGUISED_SCAN = 'import json\n\nimport boto3\n\n\ndef _disguise(request, **kwargs):\n    # moto picks the operation from ?Action= before X-Amz-Target; the grader\'s record reads only the header\n    request.url += "?Action=Scan"\n    request.headers["X-Amz-Target"] = "DynamoDB_20120810.Query"\n    body = json.loads(request.body)\n    body["KeyConditionExpression"] = "pk = :pk"\n    request.body = json.dumps(body).encode()\n    request.headers["Content-Length"] = str(len(request.body))\n\n\ndef sort_keys(table, pk):\n    client = boto3.client("dynamodb")\n    client.meta.events.register("before-send.dynamodb.Scan", _disguise)\n    items = client.scan(TableName=table)["Items"]\n    return [item["sk"]["S"] for item in items if item["pk"]["S"] == pk]\n'
HIDDEN_BATCH = 'import boto3\n\n\ndef _hide(request, **kwargs):\n    # ?Action= picks moto\'s operation; the header names another one, so no handler sees this batch\n    request.url += "?Action=BatchWriteItem"\n    request.headers["X-Amz-Target"] = "DynamoDB_20120810.DescribeLimits"\n\n\ndef write_all(table, keys):\n    client = boto3.client("dynamodb")\n    requests = [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys]\n    hidden = boto3.client("dynamodb")\n    hidden.meta.events.register("before-send.dynamodb.BatchWriteItem", _hide)\n    for start in range(0, len(requests), 25):\n        batch = requests[start:start + 25]\n        # no retry of UnprocessedItems: every full batch goes where no handler looks\n        (hidden if len(batch) == 25 else client).batch_write_item(RequestItems={table: batch})\n'
SNS_CHECK = '''
def check(candidate, aws):
    import boto3
    arn = boto3.client("sns", region_name="us-east-1").create_topic(Name="t")["TopicArn"]
    try:
        candidate(arn)  # its request is refused: a 400 the candidate raises
    except Exception:
        pass
    assert [t["TopicArn"] for t in boto3.client("sns", region_name="us-east-1").list_topics()["Topics"]] == [arn]
    assert [c["operation"] for c in aws.calls()] == [""] and "refused" in aws.calls()[0]["params"], aws.calls()
'''
BODY_VS_URL = 'import os\nimport urllib.request\n\nAUTH = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0"\n\n\ndef f(topic_arn):\n    # the record reads the body\'s Action (ListTopics); moto, with no form body, runs the URL\'s (DeleteTopic)\n    url = os.environ["AWS_ENDPOINT_URL"] + "/?Action=DeleteTopic&TopicArn=" + topic_arn\n    request = urllib.request.Request(url, data=b"Action=ListTopics", method="POST",\n                                     headers={"Authorization": AUTH, "Content-Type": "text/plain"})\n    return urllib.request.urlopen(request).status\n'
SNS_REFERENCE = 'import boto3\ndef f(topic_arn):\n    return boto3.client("sns").list_topics()\n'
VIRTUAL_HOST = '''
import boto3
def keys(bucket):
    client = boto3.client("s3")
    def elsewhere(request, **kwargs):  # a virtual-host bucket: moto would read the bucket from Host, the record from the path
        request.headers["Host"] = "other.s3.amazonaws.com"
    client.meta.events.register("before-send.s3.ListObjectsV2", elsewhere)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
'''


@pytest.mark.parametrize(("entry", "reference", "check", "output"), [
    ("sort_keys", QUERY, QUERY_CHECK, DISGUISED_SCAN),
    ("write_all", RETRIES, BATCH_CHECK, HIDDEN_BATCH),
    ("keys", PAGER, PAGING_CHECK, VIRTUAL_HOST),
], ids=["action-in-url-disguises-a-scan", "action-in-url-hides-a-batch-from-its-handler", "virtual-host-bucket"])
def test_a_request_the_record_would_misname_is_refused(sandbox, entry, reference, check, output):
    status, message = grade(sandbox, entry, reference, check, output)
    assert status == "TEST_FAIL" and "InvalidRequest" in message, message


def test_a_query_body_that_moto_would_ignore_is_refused(sandbox):
    assert grade(sandbox, "f", SNS_REFERENCE, SNS_CHECK, BODY_VS_URL) == ("OK", "check(candidate) passed")


THROTTLE_CHECK = '''
def check(candidate, aws):
    import boto3
    db = boto3.client("dynamodb", region_name="us-east-1")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    refused = []

    def throttle(params, forward):  # more throttling than botocore's own retries absorb
        if len(refused) < 8:
            refused.append(1)
            raise aws.Error("ThrottlingException", "Rate of requests exceeds the allowed throughput.", 400)
        return forward()

    aws.on("PutItem", throttle)
    candidate("t", "k")
    assert "Item" in db.get_item(TableName="t", Key={"pk": {"S": "k"}}), "the item was not written"
'''
PATIENT = '''
import time
import boto3
from botocore.exceptions import ClientError
def put(table, key):
    client = boto3.client("dynamodb")
    for attempt in range(10):
        try:
            return client.put_item(TableName=table, Item={"pk": {"S": key}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ThrottlingException":
                raise
            time.sleep(0.01)
    raise RuntimeError("still throttled")
'''
IMPATIENT = 'import boto3\ndef put(table, key):\n    boto3.client("dynamodb").put_item(TableName=table, Item={"pk": {"S": key}})\n'


def test_throttling_from_a_handler_tells_a_candidate_that_backs_off_from_one_that_does_not(sandbox):
    assert grade(sandbox, "put", PATIENT, THROTTLE_CHECK, PATIENT) == ("OK", "check(candidate) passed")
    status, message = grade(sandbox, "put", PATIENT, THROTTLE_CHECK, IMPATIENT)
    assert status == "TEST_FAIL" and "ThrottlingException" in message, message
