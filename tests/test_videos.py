"""videos.py: the real yt-dlp download path against a loopback server, ffprobe, audio extraction."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
import wave
from pathlib import Path

import pytest
from conftest import fixture_path, need_ffmpeg
from fault_server import FaultServer, Response

from lcaffect_pipeline.videos import download_video
from lcaffect_pipeline.probe import VideoDecodeError, VideoDownloadError, probe_video
from lcaffect_pipeline.probe import AudioDecodeError, extract_audio
from lcaffect_ml.contracts import naming

PAGE = """<!DOCTYPE html><html><head><title>Clip page</title></head><body>
<video controls>{sources}</video></body></html>"""


def _page(*sources: tuple[str, int]) -> str:
    tags = "".join(f'<source src="{src}" type="video/mp4" res="{h}" label="{h}p">' for src, h in sources)
    return PAGE.format(sources=tags)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def site():
    need_ffmpeg()
    example = fixture_path("video", "example.mp4")  # 640x480, 16 s
    small = fixture_path("video", "realshort.mp4")  # 320x240, 1.2 s
    routes = {
        "/example.mp4": example,
        "/small.mp4": small,
        "/page.html": _page(("example.mp4", 480)),
        "/two.html": _page(("example.mp4", 480), ("small.mp4", 240)),
        "/flaky.html": _page(("flaky.mp4", 480)),
        "/flaky.mp4": example,
    }
    with FaultServer(routes) as srv:
        srv.example, srv.small = example, small
        yield srv


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------------------ download


def test_direct_url_download_then_reuse_without_network(site, lake_root):
    dest = lake_root / "videos"
    got = download_video(site.url("/example.mp4"), dest, "BV1xx411c7mD", max_height=360)
    assert got.path == dest / "BV1xx411c7mD.mp4"
    assert _sha(got.path) == _sha(site.example)
    assert got.info["extractor"] == "generic"
    sidecar = json.loads((dest / "BV1xx411c7mD.info.json").read_text())
    assert sidecar["file"] == "BV1xx411c7mD.mp4" and sidecar["video_id"] == "BV1xx411c7mD"
    assert not [p for p in dest.iterdir() if p.name.startswith(".download-")]  # temp folder gone

    before = len(site.requests)
    again = download_video(site.url("/example.mp4"), dest, "BV1xx411c7mD")
    assert again.path == got.path and again.info == got.info
    assert len(site.requests) == before  # no network for a video already present



@pytest.mark.parametrize("force", [False, True])
def test_a_changed_video_url_is_downloaded_again(site, lake_root, force):
    from lcaffect_pipeline import stages
    from lcaffect_pipeline.clips import ClipOptions, fetch_video
    from lcaffect_pipeline.videos import existing_video, source_key

    # The new URL ends in the same file name, so yt-dlp's download archive already lists its id.
    site.add("/mirror/example.mp4", site.small)
    old_url, new_url = site.url("/example.mp4"), site.url("/mirror/example.mp4")

    def run(url: str, force: bool = False) -> stages.VideoResult:
        fn = lambda video, prev: fetch_video(video, prev, root=lake_root, opts=ClipOptions())  # noqa: E731
        [result] = stages.run_stage(lake_root, "videos", [{"video_id": "v1", "video": url}], fn, force=force)
        assert result.status != "failed", result.reason
        return result

    first = run(old_url)
    assert run(old_url).status == "skipped"
    before = len(site.requests)
    second = run(new_url, force=force)
    assert second.status == "done" and len(site.requests) > before
    assert _sha(lake_root / "videos" / "v1.mp4") == _sha(site.small) and second.output_hash != first.output_hash
    assert run(new_url).status == "skipped"
    before = len(site.requests)
    assert run(new_url, force=True).output_hash == second.output_hash  # same URL: force keeps the file
    assert len(site.requests) == before

    # A sidecar that does not say where its file came from (no source hash) is not trusted: fetched again.
    sidecar = lake_root / "videos" / "v1.info.json"
    meta = json.loads(sidecar.read_text())
    del meta["source_sha256"]
    sidecar.write_text(json.dumps(meta))
    assert existing_video(lake_root / "videos", "v1").source_key is None
    before = len(site.requests)
    assert run(new_url).status == "done" and len(site.requests) > before
    assert existing_video(lake_root / "videos", "v1").source_key == source_key(new_url)

def test_html_page_with_video_tag(site, lake_root):
    got = download_video(site.url("/page.html"), lake_root / "videos", "page-video")
    assert got.path.name == "page-video.mp4"
    assert _sha(got.path) == _sha(site.example)
    assert got.info["extractor_key"] == "HTML5MediaEmbed"


@pytest.mark.parametrize("max_height, expected_height", [(360, 240), (1080, 480)])
def test_format_selection_caps_height(site, lake_root, max_height, expected_height):
    got = download_video(site.url("/two.html"), lake_root / "v", f"two-{max_height}", max_height=max_height)
    assert probe_video(got.path).height == expected_height


def test_hostile_video_id_stays_in_the_folder(site, lake_root):
    dest = lake_root / "videos"
    got = download_video(site.url("/example.mp4"), dest, "../../etc/passwd")
    assert got.path.parent == dest
    assert got.path.name == f"{naming.safe_name('../../etc/passwd')}.mp4"
    assert got.video_id == "../../etc/passwd"


def test_missing_video_is_a_typed_error_and_leaves_nothing(site, lake_root):
    dest = lake_root / "videos"
    with pytest.raises(VideoDownloadError) as err:
        download_video(site.url("/gone.mp4"), dest, "gone", retries=0)
    assert err.value.video_id == "gone" and "404" in err.value.reason
    assert not dest.exists() or list(dest.iterdir()) == []


def test_retries_recover_from_a_500_and_a_truncated_body(site, lake_root):
    site.plan("/flaky.mp4", ["500", "truncate"])
    got = download_video(site.url("/flaky.html"), lake_root / "v", "flaky", retries=3)
    assert _sha(got.path) == _sha(site.example)  # resumed to the exact bytes
    assert [r.fault for r in site.requests_for("/flaky.mp4")][:2] == ["500", "truncate"]


def test_no_retries_gives_up(site, lake_root):
    site.plan("/flaky.mp4", ["503"])
    with pytest.raises(VideoDownloadError, match="503"):
        download_video(site.url("/flaky.html"), lake_root / "v", "flaky", retries=0)
    assert not (lake_root / "v" / "flaky.mp4").exists()


def test_cookies_are_sent_but_never_shown(site, lake_root, tmp_path, caplog):
    secret = "SESSDATA-8f3a1c9e77d2-do-not-log"
    host = "127.0.0.1"
    cookiefile = tmp_path / "cookies.txt"
    other = "bili_jct-51d0e7a2c4-http-only"  # an HttpOnly cookie line starts with '#HttpOnly_'
    cookiefile.write_text(f"# Netscape HTTP Cookie File\n{host}\tFALSE\t/\tFALSE\t0\tSESSDATA\t{secret}\n"
                          f"#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\tbili_jct\t{other}\n")
    original = cookiefile.read_bytes()
    caplog.set_level(logging.DEBUG)

    download_video(site.url("/example.mp4"), lake_root / "v", "with-cookie", cookiefile=cookiefile)
    assert any(secret in r.headers.get("cookie", "") for r in site.requests)  # the cookie was used

    # A server that echoes the cookie back in its error page: still nothing may leak.
    site.add("/leak.mp4", lambda req: Response(f"denied for {req.headers.get('cookie')}".encode(), 403))
    with pytest.raises(VideoDownloadError) as err:
        download_video(site.url("/leak.mp4"), lake_root / "v", "denied", cookiefile=cookiefile, retries=0)
    assert "403" in str(err.value)
    for value in (secret, other):
        assert value not in str(err.value) and value not in caplog.text
    info = (lake_root / "v" / "with-cookie.info.json").read_text()
    assert secret not in info
    assert cookiefile.read_bytes() == original  # yt-dlp wrote back to a private copy, not the secret


def test_cookie_value_echoed_into_urls_is_redacted(site, lake_root, tmp_path, caplog):
    # A site that redirects to a URL carrying the session value: yt-dlp then logs it and names
    # the video after it. Every log line and the info sidecar must show *** instead.
    secret = "SESSDATA-0b9d5e11aa42"
    cookiefile = tmp_path / "cookies.txt"
    cookiefile.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSESSDATA\t{secret}\n")
    site.add("/redirect.mp4", Response(b"", 302, {"Location": f"/media/{secret}.mp4"}))
    site.add(f"/media/{secret}.mp4", site.example)
    caplog.set_level(logging.DEBUG)
    got = download_video(site.url("/redirect.mp4"), lake_root / "v", "redirected", cookiefile=cookiefile)
    sidecar = (lake_root / "v" / "redirected.info.json").read_text()
    assert "***" in caplog.text + sidecar  # the value did pass through and was replaced
    assert secret not in caplog.text and secret not in sidecar and secret not in json.dumps(got.info)


def test_unreadable_cookie_file_is_reported_without_content(site, lake_root, tmp_path):
    bad = tmp_path / "cookies.txt"
    bad.write_text("SESSDATA=topsecretvalue; not a netscape file\n")
    with pytest.raises(VideoDownloadError) as err:
        download_video(site.url("/example.mp4"), lake_root / "v", "x", cookiefile=bad)
    assert "cookie file" in err.value.reason and "topsecretvalue" not in str(err.value)


def test_duration_limits_reject_after_download_when_the_site_has_no_duration(site, lake_root):
    dest = lake_root / "v"
    with pytest.raises(VideoDownloadError, match=r"duration 16\.0 s outside"):
        download_video(site.url("/example.mp4"), dest, "too-long", max_duration_s=10)
    assert not dest.exists() or _visible(dest) == []
    ok = download_video(site.url("/example.mp4"), dest, "fits", min_duration_s=10, max_duration_s=60)
    assert ok.path.exists()


def test_match_filter_rejects_on_a_reported_duration(site, lake_root):
    # The generic extractor reports no duration; a page whose JSON-LD declares one lets yt-dlp's
    # match filter reject the video before it is downloaded.
    ld = ('<script type="application/ld+json">{"@context":"https://schema.org","@type":"VideoObject",'
          '"name":"clip","contentUrl":"%s","duration":"PT16S"}</script>' % site.url("/example.mp4"))
    site.add("/ld.html", f"<html><head><title>ld</title>{ld}</head><body></body></html>")
    with pytest.raises(VideoDownloadError, match=r"duration 16(\.0)? s outside .*does not pass filter"):
        download_video(site.url("/ld.html"), lake_root / "v", "ld", max_duration_s=10)
    assert not (lake_root / "v").exists() or _visible(lake_root / "v") == []
    ok = download_video(site.url("/ld.html"), lake_root / "v", "ld", max_duration_s=20)
    assert ok.info["duration"] == 16 and _sha(ok.path) == _sha(site.example)


def test_download_archive_skips_known_videos(site, lake_root, tmp_path):
    archive = tmp_path / "archive.txt"
    download_video(site.url("/example.mp4"), lake_root / "a", "first", archive=archive)
    assert "generic example" in archive.read_text()
    with pytest.raises(VideoDownloadError, match="download archive"):
        download_video(site.url("/example.mp4"), lake_root / "b", "second", archive=archive)


def test_rate_limit_slows_the_transfer(site, lake_root):
    size = site.small.stat().st_size  # ~97 KB
    start = time.monotonic()
    download_video(site.url("/small.mp4"), lake_root / "v", "slow", rate_limit=size // 2)
    assert time.monotonic() - start > 1.0  # ~2 s at half the file per second


# ------------------------------------------------------------------------------ probe

FIXTURES = {
    # name: (duration_s, fps, width, height, video_codec, audio_codec)
    "big_buck_bunny_0_30.webm": (30.0, 24.0, 1280, 720, "vp8", "vorbis"),
    "example.mp4": (16.0, 25.0, 640, 480, "h264", None),
    "no_duration.webm": (4.94, 14.985, 1280, 720, "vp9", "opus"),
    "video_with_failing_audio.mp4": (11.2, 25.0, 640, 360, "h264", "mp3"),
    "big_buck_bunny_432_433.webm": (1.0, 24.0, 1280, 720, "vp8", "vorbis"),
    "clip1024.flv": (17.3, 10.0, 112, 80, "vp6f", None),
    "realshort.mp4": (1.2, 30.02, 320, 240, "h264", "aac"),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_probe_fixture(name):
    need_ffmpeg()
    duration, fps, width, height, vcodec, acodec = FIXTURES[name]
    p = probe_video(fixture_path("video", name))
    assert p.duration_s == pytest.approx(duration, abs=0.02)
    assert p.fps == pytest.approx(fps, abs=0.01)
    assert (p.width, p.height, p.video_codec, p.audio_codec) == (width, height, vcodec, acodec)
    assert p.has_audio is (acodec is not None)


def test_probe_finds_duration_without_container_duration():
    need_ffmpeg()
    p = probe_video(fixture_path("video", "no_duration.webm"))
    assert p.duration_source == "packets" and p.nb_frames == 74


def _broken(tmp_path: Path, name: str, keep: float | int) -> Path:
    src = fixture_path("video", name).read_bytes()
    out = tmp_path / f"broken_{name}"
    out.write_bytes(src[: int(keep * len(src)) if isinstance(keep, float) else keep])
    return out


def _text_file(path: Path) -> Path:
    path.write_text("just text, not a video")
    return path


@pytest.mark.parametrize("make, reason", [
    (lambda t: _broken(t, "example.mp4", 0), "empty file"),
    (lambda t: _broken(t, "example.mp4", 2048), "ffprobe"),
    (lambda t: _broken(t, "realshort.mp4", 0.9), "ffprobe"),  # moov at the end: cut off
    (lambda t: _text_file(t / "notes.mp4"), "ffprobe"),  # wrong content behind a video name
    (lambda t: t / "missing.mp4", "not found"),
])
def test_probe_broken_files(tmp_path, make, reason):
    need_ffmpeg()
    path = make(tmp_path)
    with pytest.raises(VideoDecodeError) as err:
        probe_video(path)
    assert reason in err.value.reason and err.value.path == str(path)


def test_probe_audio_only_file_has_no_video_stream(tmp_path):
    need_ffmpeg()
    wav = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(wav)], check=True)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(wav)


# ------------------------------------------------------------------------------ audio


def _wav_seconds(path: Path) -> tuple[float, int, int]:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate(), w.getframerate(), w.getnchannels()


def test_extract_audio_16k_mono(tmp_path):
    need_ffmpeg()
    out = extract_audio(fixture_path("video", "realshort.mp4"), tmp_path / "a" / "realshort.wav")
    seconds, rate, channels = _wav_seconds(out)
    assert (rate, channels) == (16000, 1) and seconds == pytest.approx(1.17, abs=0.05)
    assert [p.name for p in out.parent.iterdir()] == ["realshort.wav"]  # no temporary left


def test_extract_audio_without_audio_stream_is_none(tmp_path):
    need_ffmpeg()
    assert extract_audio(fixture_path("video", "example.mp4"), tmp_path / "x.wav") is None
    assert not (tmp_path / "x.wav").exists()


def test_failing_audio_fixture_decodes_with_ffmpeg(tmp_path):
    # MoviePy's reader fails on this MP3 track; ffmpeg decodes all of it (documented choice).
    need_ffmpeg()
    out = extract_audio(fixture_path("video", "video_with_failing_audio.mp4"), tmp_path / "f.wav", sr=8000)
    seconds, rate, _ = _wav_seconds(out)
    assert rate == 8000 and seconds == pytest.approx(11.23, abs=0.1)


def test_corrupt_audio_track_is_an_audio_decode_error(tmp_path):
    need_ffmpeg()
    noisy = tmp_path / "noisy.mp4"  # every AAC packet scrambled by ffmpeg's noise bitstream filter
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(fixture_path("video", "realshort.mp4")), "-c", "copy",
                    "-bsf:a", "noise=amount=1", str(noisy)], check=True)
    with pytest.raises(AudioDecodeError) as err:
        extract_audio(noisy, tmp_path / "out" / "noisy.wav")
    assert "aac" in err.value.reason and err.value.path == str(noisy)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_extract_audio_of_a_broken_file_is_a_decode_error(tmp_path):
    need_ffmpeg()
    with pytest.raises(VideoDecodeError, match="empty file"):
        extract_audio(_broken(tmp_path, "realshort.mp4", 0), tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()
