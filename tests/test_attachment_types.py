"""Which files an upload may carry, and their types, as kinto-attachment decides.

``attachment_extensions`` is kinto-attachment's ``extensions`` expression:
groups and extensions joined with ``+`` (a list's entries are joined with
``+`` too), ``any`` alone turning the check off.  ``attachment_mimetypes``
is its ``mimetypes`` (``.ext:type;...``), which overrides the type an upload
gets (kinto-attachment refuses no type: only names are checked).  The groups
below are copied from kinto-attachment's utils.py, so that the plugin's own
table is checked against them, not against itself.
"""

import pytest
from conftest import Api, assert_error, assert_status

from kintofs.config import ConfigError

GROUPS = {
    "documents": "pdf rtf odf ods gnumeric abw doc docx xls xlsx",
    "text": "txt",
    "images": "jpg jpe jpeg png gif svg bmp tiff",
    "audio": "wav mp3 aac ogg oga flac",
    "video": "mpeg 3gp avi divx dvr flv mp4 wmv",
    "data": "csv ini json plist xml yaml yml",
    "scripts": "js php pl py rb sh",
    "archives": "gz bz2 zip tar tgz txz 7z",
    "executables": "so exe dll",
}
GROUPS["default"] = " ".join(GROUPS[name] for name in ("documents", "text", "images", "data"))
EVERY_EXTENSION = {ext for group in GROUPS.values() for ext in group.split()}

REFUSED = "body: File extension is not allowed."


@pytest.fixture
def upload(start_app):
    """``upload(settings)`` -> a function posting a file name to a fresh record."""

    def server_with(**settings):
        api = Api(start_app(plugins="flush attachment", **settings))
        assert_status(api.put("/buckets/b"), 201)
        assert_status(api.put("/buckets/b/collections/c"), 201)
        numbers = iter(range(10**6))

        def post(filename, content_type="application/x-test"):
            url = f"/buckets/b/collections/c/records/r{next(numbers)}/attachment"
            files = {"attachment": (filename, b"content", content_type)}
            return api.post(url, files=files)

        return post

    return server_with


def accepted(post, filename):
    response = post(filename)
    if response.status_code == 201:
        assert response.json()["filename"] == filename
        return True
    assert_error(response, 400, 107, REFUSED)
    return False


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_group_admits_its_extensions_only(upload, group):
    post = upload(attachment_extensions=group)
    own = set(GROUPS[group].split())
    for extension in sorted(own):
        assert accepted(post, f"file.{extension}"), extension
        assert accepted(post, f"FILE.{extension.upper()}"), extension  # case does not matter
    for extension in sorted(EVERY_EXTENSION - own):
        assert not accepted(post, f"file.{extension}"), extension
    assert not accepted(post, "noextension")
    assert not accepted(post, f".{sorted(own)[0]}")  # a dot file has no extension


def test_default_is_kinto_default_group(upload):
    post = upload()  # no setting
    assert accepted(post, "report.pdf")
    assert accepted(post, "photo.jpeg")
    assert accepted(post, "settings.yml")
    assert not accepted(post, "song.mp3")
    assert not accepted(post, "page.html")
    assert not accepted(post, "README")


def test_combinations_with_plus(upload):
    post = upload(attachment_extensions="images+pdf")
    assert accepted(post, "a.png")
    assert accepted(post, "a.pdf")
    assert not accepted(post, "a.docx")
    assert not accepted(post, "a.txt")
    # Entries of a list are joined with "+": ["default", "video"] is "default+video".
    post = upload(attachment_extensions='["default", "video"]')
    assert accepted(post, "clip.mp4")
    assert accepted(post, "notes.txt")
    assert not accepted(post, "song.flac")


def test_plain_extensions_and_last_dot(upload):
    post = upload(attachment_extensions='["ftl md"]')  # Kinto: words, not groups
    assert accepted(post, "strings.ftl")
    assert accepted(post, "README.MD")
    assert not accepted(post, "a.pdf")
    assert not accepted(post, "archive.ftl.gz")  # the last dot counts


def test_any_admits_every_name_even_without_extension(upload):
    post = upload(attachment_extensions="any")
    for name in ("page.html", "run.exe", "README", ".bashrc", "a.b.c.unknown"):
        assert accepted(post, name), name


def test_any_with_more_is_no_longer_any(upload):
    # kinto-attachment: "any" adds nothing; only an empty set turns the check off.
    post = upload(attachment_extensions="any+pdf")
    assert accepted(post, "a.pdf")
    assert not accepted(post, "a.html")
    assert not accepted(post, "README")


def test_mimetypes_override_the_sent_type(upload):
    post = upload(
        attachment_extensions="any",
        attachment_mimetypes=".ftl:application/vnd.fluent; .DB:application/vnd.sqlite3",
    )
    assert post("strings.ftl", "text/plain").json()["mimetype"] == "application/vnd.fluent"
    assert post("cache.db").json()["mimetype"] == "application/vnd.sqlite3"
    # Kinto's own overrides stay, and other files keep the type they were sent with.
    assert post("key.pem", "text/plain").json()["mimetype"] == "application/x-pem-file"
    assert post("a.txt", "text/markdown").json()["mimetype"] == "text/markdown"


def test_no_type_is_refused(upload):
    # kinto-attachment checks names, never types: a type matching no
    # extension is stored as sent.
    post = upload()
    response = assert_status(post("data.json", "application/x-msdownload"), 201)
    assert response.json()["mimetype"] == "application/x-msdownload"


@pytest.mark.parametrize(
    "value", ["ftl:application/vnd.fluent", ".ftl", ".ftl:not a type", ".:text/plain"]
)
def test_a_bad_mimetypes_setting_stops_the_daemon(start_app, value):
    with pytest.raises(ConfigError, match="attachment_mimetypes") as raised:
        start_app(plugins="attachment", attachment_mimetypes=value)
    assert raised.value.key == "attachment_mimetypes"
