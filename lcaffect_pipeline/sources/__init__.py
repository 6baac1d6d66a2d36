"""Comment sources: fetch one video's raw live-comment files into the lake.

Each video gets one folder that the caller chooses (``{lake}/sources/{platform}/{safe_name(id)}``):

    {folder}/<raw files, named as the platform or yt-dlp names them>
    {folder}/manifest.json    written last: files with sha256 and size, fetch time, status,
                              video metadata (never cookies)

Work in progress is staged in a hidden sibling folder ``.{name}.staging`` (with a ``partial``
manifest saying what is missing and why), so a failed or interrupted fetch leaves no file under a
final name and no ``complete`` manifest; the next run reuses what was staged and fetches only the
rest. Web fetchers commit only what parses (``commit(validate=True)``): a stored reply the
parser would reject is dropped and the fetch fails, so that the next run fetches it again. A
fetch that got only a stand-in for the data (Bilibili's capped XML sample after a passing
failure) is committed with status ``incomplete``: readable now, fetched again by the next run.
A web source's folder whose manifest says ``complete`` is skipped unless ``refresh=True`` (a
local source is compared with its files on every run, see ``local``); a refresh
fetches everything into staging and replaces only the files whose content changed, and
``FetchResult.changed`` says whether anything did, so data versions stay put when a re-crawl
brings nothing new. Readers should take the file list from the manifest.

``fetch_comments(platform, source, dest_dir, config=...)`` picks the fetcher: a Bilibili BV/av id
or video URL goes to ``bilibili.BilibiliClient``, another http(s) URL to yt-dlp
(``ytdlp_comments``), an existing path to ``local``. It never raises for one bad video: the
error comes back in the ``FetchResult`` so that a batch goes on.

The fetchers are imported lazily (yt-dlp alone takes a second to import).
"""

from __future__ import annotations

from .fetch import SourceConfig, choose_fetcher, fetch_comments
from .folder import DEFAULT_TRACKS, FetchResult, MANIFEST, MANIFEST_VERSION, STATUSES, SourceFolder

__all__ = ['DEFAULT_TRACKS', 'FetchResult', 'MANIFEST', 'MANIFEST_VERSION', 'STATUSES', 'SourceConfig', 'SourceFolder', 'choose_fetcher', 'fetch_comments']
