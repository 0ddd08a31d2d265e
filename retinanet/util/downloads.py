"""Weight files fetched once into torch's hub cache and reused from there.

The cache is torchvision's own: ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``
by default), under the file name of the URL, so weights torchvision has already downloaded are
found, and a file copied there by hand on an offline machine is used as it is. Downloads are
checked against the hash prefix in the file name, written to a temporary file and renamed, so an
interrupted download leaves nothing behind. ``RETINANET_OFFLINE=1`` in the environment forbids
downloads: only cached files are used.
"""
import contextlib
import os
import socket
import urllib.error
import urllib.parse

import torch

# Seconds without a byte before a download is abandoned (so an unreachable host fails, not hangs).
NETWORK_TIMEOUT = 60


class DownloadError(RuntimeError):
    """A weights file is neither cached nor downloadable; the message says where to put it."""


def cache_folder():
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def cached_path(url):
    """Where the file of ``url`` lies (or will lie) in the cache."""
    return os.path.join(cache_folder(), os.path.basename(urllib.parse.urlparse(url).path))


def fetch(url, download=True):
    """The local path of ``url``'s file: from the cache, else downloaded into it (when ``download``).

    Raises DownloadError, in one line naming the URL, the file name and the folder to put it in,
    when the file is not cached and cannot be downloaded."""
    path = cached_path(url)
    if os.path.isfile(path):
        return path
    folder, filename = os.path.split(path)
    where = f"put {filename} from {url} in {folder} (or set TORCH_HOME to a folder whose hub/checkpoints holds it)"
    if not download or os.environ.get("RETINANET_OFFLINE", "") not in ("", "0"):
        why = "RETINANET_OFFLINE is set" if download else "downloads are off"
        raise DownloadError(f"{filename} is not in the cache and {why}; {where}")
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        os.makedirs(folder, exist_ok=True)
        with _network_timeout(NETWORK_TIMEOUT):
            torch.hub.download_url_to_file(url, path, match.group(1) if match else None, progress=True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"cannot download {url} ({reason}); {where}") from None
    return path


@contextlib.contextmanager
def _network_timeout(seconds):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
