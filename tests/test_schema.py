"""JSON-schema validation over HTTP (protocol section 15; in process, see conftest).

The expected bodies were taken from a real Kinto 26.5.0 with
``experimental_collection_schema_validation = true``; the few places where
Kinto answers 500 and kintofs a 400 are marked.
"""

import json

import pytest
from conftest import BOB, Api, assert_error, assert_status, flush, make_server


@pytest.fixture(scope="module")
def validating(tmp_path_factory):
    server = make_server(
        tmp_path_factory.mktemp("schema") / "data", experimental_collection_schema_validation="true"
    )
    yield server
    server.stop()


@pytest.fixture
def api(validating):
    api = flush(validating)
    assert_status(api.put("/buckets/b"), 201)
    return api


def put_collection(api, cid, schema, bucket="b", **data):
    response = api.put(
        f"/buckets/{bucket}/collections/{cid}", json={"data": {"schema": schema, **data}}
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


def post_record(api, cid, data, bucket="b"):
    return api.post(f"/buckets/{bucket}/collections/{cid}/records", json={"data": data})


def assert_invalid(response, name, description, message=None):
    """Kinto's 400 errno 107 with one body detail, exactly."""
    if message is None:
        message = description if str(name) in description else f"{name} in body: {description}"
    body = assert_error(response, 400, 107, message)
    assert body["error"] == "Invalid parameters"
    assert body["details"] == [{"location": "body", "name": name, "description": description}]
    return body


ARTICLE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "n": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "nested": {"type": "object", "properties": {"x": {"type": "number"}}},
    },
    "required": ["title", "n"],
}


# -- capability and switch --------------------------------------------------


def test_schema_capability_is_advertised(api):
    capabilities = api.get("/").json()["capabilities"]
    assert capabilities["schema"] == {
        "description": "Validates collection records with JSON schemas.",
        "url": "https://kinto.readthedocs.io/en/latest/api/1.x/collections.html"
        "#collection-json-schema",
    }


def test_without_the_setting_nothing_is_validated_nor_stamped(app_server):
    plain = flush(app_server)
    assert "schema" not in plain.get("/").json()["capabilities"]
    assert_status(plain.put("/buckets/b"), 201)
    put_collection(plain, "c", ARTICLE)
    response = assert_status(post_record(plain, "c", {"title": 5, "schema": 3}), 201)
    assert response.json()["data"]["schema"] == 3  # the client's own field, untouched


# -- record errors: Kinto's name and message rules ------------------------------


def test_required_names_the_last_required_field_not_the_missing_one(api):
    put_collection(api, "c", ARTICLE)
    # "title" is missing, but Kinto names the last field listed in "required".
    assert_invalid(
        post_record(api, "c", {"n": 1}),
        "n",
        "'title' is a required property",
        message="n in body: 'title' is a required property",
    )
    assert_invalid(
        post_record(api, "c", {"title": "x"}),
        "n",
        "'n' is a required property",
        message="'n' is a required property",
    )


def test_type_error_names_the_field_and_prefixes_the_message(api):
    put_collection(api, "c", ARTICLE)
    assert_invalid(
        post_record(api, "c", {"title": 1, "n": 1}),
        "title",
        "1 is not of type 'string'",
        message="title in body: 1 is not of type 'string'",
    )


def test_message_is_bare_when_the_name_appears_in_the_description(api):
    put_collection(api, "c", ARTICLE)
    # "n" appears in "minimum": Kinto then drops the "n in body: " prefix.
    assert_invalid(
        post_record(api, "c", {"title": "a", "n": -1}),
        "n",
        "-1 is less than the minimum of 0",
        message="-1 is less than the minimum of 0",
    )


def test_array_item_error_is_named_by_its_index(api):
    put_collection(api, "c", ARTICLE)
    body = assert_invalid(
        post_record(api, "c", {"title": "a", "n": 1, "tags": ["a", 3]}),
        1,
        "3 is not of type 'string'",
        message="1 in body: 3 is not of type 'string'",
    )
    assert body["details"][0]["name"] == 1 and not isinstance(body["details"][0]["name"], bool)


def test_nested_error_is_named_by_the_innermost_key(api):
    put_collection(api, "c", ARTICLE)
    assert_invalid(
        post_record(api, "c", {"title": "a", "n": 1, "nested": {"x": "no"}}),
        "x",
        "'no' is not of type 'number'",
    )


def test_additional_properties_is_named_by_the_keyword(api):
    put_collection(
        api, "c", {"type": "object", "additionalProperties": False, "properties": {"a": {}}}
    )
    assert_invalid(
        post_record(api, "c", {"a": 1, "b": 2}),
        "additionalProperties",
        "Additional properties are not allowed ('b' was unexpected)",
    )


def test_root_enum_is_named_by_its_last_value(api):
    put_collection(api, "c", {"enum": [{"a": 1}, {"b": 2}]})
    response = post_record(api, "c", {"c": 1})
    assert_invalid(
        response,
        {"b": 2},
        "{'c': 1} is not one of [{'a': 1}, {'b': 2}]",
        message="{'c': 1} is not one of [{'a': 1}, {'b': 2}]",
    )


@pytest.mark.parametrize(
    "schema, data, name, description",
    [
        # Kinto 26.5.0 answers 500 for these; kintofs names the keyword.
        (
            {"type": "object", "maxProperties": 1},
            {"a": 1, "b": 2},
            "maxProperties",
            "{'a': 1, 'b': 2} has too many properties",
        ),
        (
            {"type": "object", "not": {"required": ["a"]}},
            {"a": 1},
            "not",
            "{'a': 1} should not be valid under {'required': ['a']}",
        ),
        (
            {"type": "object", "dependentRequired": {"a": ["b"]}},
            {"a": 1},
            "dependentRequired",
            "'b' is a dependency of 'a'",
        ),
    ],
)
def test_root_keywords_kinto_crashes_on_are_a_400(api, schema, data, name, description):
    put_collection(api, "c", schema)
    assert_invalid(post_record(api, "c", data), name, description)


# -- what the schema sees -------------------------------------------------------


def test_valid_record_is_stamped_with_the_collection_timestamp(api):
    collection = put_collection(api, "c", ARTICLE)
    created = assert_status(post_record(api, "c", {"title": "a", "n": 1, "schema": 5}), 201)
    assert created.json()["data"]["schema"] == collection["last_modified"]
    put = assert_status(
        api.put("/buckets/b/collections/c/records/r1", json={"data": {"title": "a", "n": 1}}), 201
    )
    assert put.json()["data"]["schema"] == collection["last_modified"]
    patched = assert_status(
        api.patch("/buckets/b/collections/c/records/r1", json={"data": {"n": 3}}), 200
    )
    data = patched.json()["data"]
    assert data == {
        "title": "a",
        "n": 3,
        "schema": collection["last_modified"],
        "id": "r1",
        "last_modified": data["last_modified"],
    }


def test_empty_schema_accepts_anything_and_still_stamps(api):
    collection = put_collection(api, "c", {})
    created = assert_status(post_record(api, "c", {"x": 1}), 201).json()["data"]
    assert created["schema"] == collection["last_modified"]


def test_outdated_records_can_be_found_with_lt_schema(api):
    first = put_collection(api, "c", {"type": "object"})
    old = assert_status(post_record(api, "c", {"v": 1}), 201).json()["data"]
    second = put_collection(api, "c", {"type": "object", "properties": {"v": {"type": "integer"}}})
    new = assert_status(post_record(api, "c", {"v": 2}), 201).json()["data"]
    assert (old["schema"], new["schema"]) == (first["last_modified"], second["last_modified"])
    found = api.get(f"/buckets/b/collections/c/records?lt_schema={second['last_modified']}").json()
    assert [record["id"] for record in found["data"]] == [old["id"]]


def test_a_changed_schema_applies_at_once(api):
    put_collection(api, "c", {"type": "object"})
    assert_status(post_record(api, "c", {"v": "text"}), 201)
    put_collection(api, "c", {"type": "object", "properties": {"v": {"type": "integer"}}})
    assert_invalid(post_record(api, "c", {"v": "text"}), "v", "'text' is not of type 'integer'")


def test_id_is_hidden_unless_the_schema_mentions_it(api):
    put_collection(api, "c", {"type": "object", "required": ["id", "title"]})
    assert_invalid(post_record(api, "c", {}), "title", "'title' is a required property")
    assert_status(post_record(api, "c", {"title": 1}), 201)


def test_id_mentioned_in_properties_is_validated(api):
    put_collection(
        api,
        "c",
        {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string", "pattern": "^a"}},
        },
    )
    # A POST without id is validated before the server makes one up.
    assert_invalid(post_record(api, "c", {}), "id", "'id' is a required property")
    assert_invalid(
        api.put("/buckets/b/collections/c/records/bbb", json={"data": {}}),
        "id",
        "'bbb' does not match '^a'",
    )
    assert_status(api.put("/buckets/b/collections/c/records/abc", json={"data": {}}), 201)
    assert_status(post_record(api, "c", {"id": "a-posted"}), 201)


def test_server_fields_are_dropped_from_required(api):
    put_collection(
        api,
        "c",
        {"type": "object", "required": ["last_modified", "schema"], "additionalProperties": False},
    )
    assert_status(post_record(api, "c", {}), 201)


def test_patch_validates_the_merged_record(api):
    put_collection(api, "c", ARTICLE)
    assert_status(
        api.put("/buckets/b/collections/c/records/r1", json={"data": {"title": "a", "n": 1}}), 201
    )
    assert_invalid(
        api.patch("/buckets/b/collections/c/records/r1", json={"data": {"n": "z"}}),
        "n",
        "'z' is not of type 'integer'",
    )
    merge = api.patch(
        "/buckets/b/collections/c/records/r1",
        data=json.dumps({"data": {"title": None}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert_invalid(merge, "n", "'title' is a required property")
    unchanged = api.get("/buckets/b/collections/c/records/r1").json()["data"]
    assert (unchanged["title"], unchanged["n"]) == ("a", 1)


def test_batch_validates_each_subrequest(api):
    put_collection(api, "c", ARTICLE)
    response = assert_status(
        api.post(
            "/batch",
            json={
                "requests": [
                    {
                        "method": "POST",
                        "path": "/buckets/b/collections/c/records",
                        "body": {"data": {"n": 1}},
                    },
                    {
                        "method": "POST",
                        "path": "/buckets/b/collections/c/records",
                        "body": {"data": {"title": "t", "n": 1}},
                    },
                ]
            },
        ),
        200,
    ).json()["responses"]
    assert [sub["status"] for sub in response] == [400, 201]
    assert response[0]["body"]["details"] == [
        {"location": "body", "name": "n", "description": "'title' is a required property"}
    ]
    assert "schema" in response[1]["body"]["data"]


# -- dialects ------------------------------------------------------------------------

TUPLE_ITEMS = {
    "type": "object",
    "properties": {"t": {"type": "array", "items": [{"type": "string"}]}},
}


def test_without_dollar_schema_data_is_validated_with_draft_2020_12(api):
    put_collection(
        api,
        "c",
        {
            "type": "object",
            "properties": {"t": {"type": "array", "prefixItems": [{"type": "string"}]}},
        },
    )
    assert_invalid(
        post_record(api, "c", {"t": [1]}),
        0,
        "1 is not of type 'string'",
        message="0 in body: 1 is not of type 'string'",
    )


def test_draft_7_tuple_items_work_when_the_schema_says_draft_7(api):
    put_collection(api, "c", {"$schema": "http://json-schema.org/draft-07/schema#", **TUPLE_ITEMS})
    assert_invalid(post_record(api, "c", {"t": [1]}), 0, "1 is not of type 'string'")
    assert_status(post_record(api, "c", {"t": ["ok", 2]}), 201)


def test_draft_7_only_schema_without_dollar_schema_is_a_400(api):
    # Valid Draft 7 (so it could be stored), invalid in 2020-12: Kinto answers 500.
    put_collection(api, "c", TUPLE_ITEMS)
    assert_invalid(
        post_record(api, "c", {"t": [1]}),
        "schema",
        "items[{'type': 'string'}] is not of type 'object', 'boolean'",
    )


def test_unknown_dollar_schema_falls_back_to_the_newest_dialect(api):
    put_collection(
        api,
        "c",
        {
            "$schema": "http://example.com/x",
            "type": "object",
            "properties": {"a": {"type": "string"}},
        },
    )
    assert_invalid(post_record(api, "c", {"a": 1}), "a", "1 is not of type 'string'")


# -- unresolvable $ref ---------------------------------------------------------------


def test_unresolvable_local_ref_is_a_400_naming_schema(api):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}}
    put_collection(api, "c", schema)
    assert_invalid(
        post_record(api, "c", {"a": 1}),
        "schema",
        "PointerToNowhere: '/definitions/nope' does not exist within "
        "{'type': 'object', 'properties': {'a': {'$ref': '#/definitions/nope'}}}",
        message="schema in body: PointerToNowhere: '/definitions/nope' does not exist "
        "within {'type': 'object', 'properties': {'a': {'$ref': "
        "'#/definitions/nope'}}}",
    )
    # The reference is only followed when the data reaches it.
    assert_status(post_record(api, "c", {"b": 1}), 201)


def test_remote_ref_is_never_fetched(api, server):
    # A URL that answers {} (the real daemon's: the in-process server has no
    # address): had kintofs fetched it, the record would pass.
    url = server.url + "/__lbheartbeat__"
    put_collection(api, "c", {"type": "object", "properties": {"a": {"$ref": url}}})
    assert_invalid(post_record(api, "c", {"a": 1}), "schema", f"Unresolvable: {url}")


# -- bucket-level schemas ----------------------------------------------------------------


@pytest.fixture
def b3(api):
    assert_status(
        api.put(
            "/buckets/b3",
            json={
                "data": {
                    "record:schema": {"type": "object", "required": ["r"]},
                    "collection:schema": {
                        "type": "object",
                        "properties": {"title": {"type": "string"}},
                        "required": ["title"],
                    },
                    "group:schema": {"type": "object", "properties": {"members": {"maxItems": 1}}},
                }
            },
        ),
        201,
    )
    return api


def test_bucket_collection_schema_validates_collections(b3):
    assert_invalid(
        b3.put("/buckets/b3/collections/c", json={"data": {}}),
        "title",
        "'title' is a required property",
    )
    assert_invalid(
        b3.put("/buckets/b3/collections/c", json={"data": {"title": 5}}),
        "title",
        "5 is not of type 'string'",
    )
    assert_status(b3.put("/buckets/b3/collections/c", json={"data": {"title": "t"}}), 201)
    assert_invalid(
        b3.patch("/buckets/b3/collections/c", json={"data": {"title": 3}}),
        "title",
        "3 is not of type 'string'",
    )


def test_bucket_record_schema_applies_after_the_collection_schema(b3):
    assert_status(b3.put("/buckets/b3/collections/plain", json={"data": {"title": "t"}}), 201)
    assert_invalid(
        post_record(b3, "plain", {"x": 1}, bucket="b3"), "r", "'r' is a required property"
    )
    # No collection schema: the record keeps the "schema" field it was sent.
    kept = assert_status(post_record(b3, "plain", {"r": 1, "schema": 77}, bucket="b3"), 201)
    assert kept.json()["data"]["schema"] == 77
    put_collection(b3, "c2", {"type": "object", "required": ["x"]}, bucket="b3", title="t")
    assert_invalid(post_record(b3, "c2", {}, bucket="b3"), "x", "'x' is a required property")
    assert_invalid(post_record(b3, "c2", {"x": 1}, bucket="b3"), "r", "'r' is a required property")
    assert_status(post_record(b3, "c2", {"x": 1, "r": 2}, bucket="b3"), 201)


def test_bucket_group_schema_validates_groups_with_default_members(b3):
    assert_invalid(
        b3.put("/buckets/b3/groups/g", json={"data": {"members": ["a", "b"]}}),
        "members",
        "['a', 'b'] is too long",
    )
    assert_status(b3.put("/buckets/b3/groups/g", json={"data": {"members": ["a"]}}), 201)
    assert_status(
        b3.put(
            "/buckets/b4",
            json={
                "data": {
                    "group:schema": {
                        "type": "object",
                        "required": ["members", "id"],
                        "properties": {"members": {"minItems": 1}},
                    }
                }
            },
        ),
        201,
    )
    assert_invalid(
        b3.put("/buckets/b4/groups/g", json={"data": {}}), "members", "[] should be non-empty"
    )


def test_missing_bucket_is_a_404_for_creators_granted_by_settings(start_app):
    daemon = start_app(
        experimental_collection_schema_validation="true",
        collection_create_principals="system.Authenticated",
        group_create_principals="system.Authenticated",
    )
    api = Api(daemon)
    for path in ("/buckets/nob/collections/c", "/buckets/nob/groups/g"):
        body = assert_error(api.put(path, json={"data": {}}), 404, 111)
        assert body["details"] == {"id": "nob", "resource_name": "bucket"}
    # Callers without that grant are refused first, as in Kinto.
    assert_error(api.as_user(None).put("/buckets/nob/collections/c", json={"data": {}}), 401, 104)


def test_missing_bucket_is_a_403_for_everybody_else(api):
    assert_error(api.put("/buckets/nob/collections/c", json={"data": {}}), 403, 121)
    assert_error(api.as_user(BOB).put("/buckets/nob/groups/g", json={"data": {}}), 403, 121)


# -- the schema fields themselves (checked with or without validation) ------------------


@pytest.mark.parametrize(
    "value, shown",
    [
        ("abc", "abc"),
        (5, "5"),
        (None, "None"),
        (True, "True"),
        ([], "[]"),
        ([1], "[1]"),
        (["a"], "['a']"),
    ],
)
def test_schema_field_must_be_a_mapping(api, value, shown):
    description = f'"{shown}" is not a mapping type: Does not implement dict-like functionality.'
    assert_invalid(
        api.put("/buckets/b/collections/c", json={"data": {"schema": value}}),
        "data.schema",
        description,
    )


@pytest.mark.parametrize(
    "schema, description",
    [
        ({"type": "foo"}, "type'foo' is not valid under any of the given schemas"),
        ({"properties": {"a": {"type": 5}}}, "type5 is not valid under any of the given schemas"),
        ({"$schema": 5}, "$schema5 is not of type 'string'"),
        ({"definitions": {"x": {"minimum": "a"}}}, "minimum'a' is not of type 'number'"),
        ({"required": "x"}, "required'x' is not of type 'array'"),
        (
            {"properties": {"a": {"items": [{"type": 1}]}}},
            "items[{'type': 1}] is not valid under any of the given schemas",
        ),
    ],
)
def test_schema_field_is_checked_against_draft_7(app_server, schema, description):
    # The plain server: the check happens even without validation enabled.
    plain = flush(app_server)
    assert_status(plain.put("/buckets/b"), 201)
    assert_invalid(
        plain.put("/buckets/b/collections/c", json={"data": {"schema": schema}}),
        "data.schema",
        description,
    )


@pytest.mark.parametrize("field", ["record:schema", "collection:schema", "group:schema"])
def test_bucket_schema_fields_are_checked(api, field):
    assert_invalid(
        api.put("/buckets/b2", json={"data": {field: {"type": "foo"}}}),
        f"data.{field}",
        "type'foo' is not valid under any of the given schemas",
    )


def test_schema_files_stay_plain_json(api, validating):
    collection = put_collection(api, "c", ARTICLE)
    record = assert_status(post_record(api, "c", {"title": "a", "n": 1}), 201).json()["data"]
    path = f"{validating.data_dir}/buckets/b/collections/c/records/{record['id']}.json"
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == record
    assert record["schema"] == collection["last_modified"]
