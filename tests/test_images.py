"""Generated images: where they may come from, what is kept, and what is shown of their URLs."""

import httpx
import pytest

from shared.images import ImageRejectedError, UrlAllowlist, decode_data_uri, download, without_query

S3 = UrlAllowlist.parse("https://*.amazonaws.com")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://bucket.s3.us-east-1.amazonaws.com/img.png?X-Amz-Signature=x", True),
        ("https://BUCKET.S3.AMAZONAWS.COM/img.png", True),
        ("https://amazonaws.com/img.png", False),  # "*." needs a subdomain
        ("http://bucket.s3.amazonaws.com/img.png", False),  # https only
        ("https://bucket.s3.amazonaws.com:8443/img.png", False),  # another port
        ("https://user:pw@bucket.s3.amazonaws.com/img.png", False),  # user info
        ("https://bucket.s3.amazonaws.com.evil.example/img.png", False),
        ("https://127.0.0.1/admin", False),
        ("https://h:abc/x", False),
        ("file:///etc/passwd", False),
    ],
)
def test_the_allowlist(url, allowed):
    assert S3.allows(url) is allowed


@pytest.mark.parametrize(
    "url", ["https://h:abc/x?sig=1", "https://[::1/x?sig=1", "https://a.amazonaws.com:99999/x"]
)
def test_a_malformed_url_is_shown_without_its_query(url):
    assert "sig=1" not in without_query(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://h:abc/x?sig=secret",
        "https://xn--.amazonaws.com/x?sig=secret",
        "https://a\tb.amazonaws.com/x?sig=secret",
    ],
)
def test_a_url_that_cannot_be_fetched_is_rejected_not_crashed(url):
    with httpx.Client() as http, pytest.raises(ImageRejectedError) as caught:
        download(url, http, UrlAllowlist.parse("https://*.amazonaws.com,https://h"))
    assert "secret" not in str(caught.value)


def test_a_data_uri_must_hold_an_image_the_contract_lists():
    import base64

    html = base64.b64encode(b"<html>not an image</html>").decode()
    with pytest.raises(ImageRejectedError, match="not an image"):
        decode_data_uri(f"data:image/png;base64,{html}", 0)
    with pytest.raises(ImageRejectedError, match="not valid base64"):
        decode_data_uri("data:image/png;base64,***", 0)


def test_a_server_trickling_its_headers_cannot_hold_a_download_past_its_time():
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\n\x89PNG":
                connection.sendall(bytes([byte]))  # each read waits 0.2 s: no per-read timeout trips
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with httpx.Client() as http, pytest.raises(ImageRejectedError, match="took over 1 s"):
            download(
                f"http://127.0.0.1:{port}/i.png",
                http,
                UrlAllowlist.parse(f"http://127.0.0.1:{port}"),
                seconds=1,
            )
    finally:
        listener.close()
