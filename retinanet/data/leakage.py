"""Images shared between sets: a validation image the model trained on makes its scores meaningless.

``check_shared_images`` compares the image files of two or more checked sets: the same file
(one path listed by both sets, as a split that put one file in both does) or the same content
under another name (a copy) is an ``image_in_another_set`` error in the later set's report,
naming the file and the image of the earlier set. Only files of equal size are hashed, so a
large dataset costs one ``stat`` per image and the hashing of the few candidates.
"""
import hashlib
import os

CHUNK_BYTES = 1 << 20


def check_shared_images(reports):
    """Add ``image_in_another_set`` errors to ``reports`` (DatasetReports, each with ``loaded``); a
    report without a parsed set is skipped, and so is a second report of the same annotation file
    (validating on the training set itself, ``--val_set train``, is a choice, not a leak). Returns
    the number of errors added."""
    files, annotation_files = [], set()  # (report, image id, real path); the sets' files seen
    for report in reports:
        if report.loaded is None or os.path.realpath(report.json_path) in annotation_files:
            continue
        annotation_files.add(os.path.realpath(report.json_path))
        image_dir = report.loaded.files.image_dir
        for entry in report.loaded.data.get("images") or []:
            name = entry.get("file_name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                path = os.path.realpath(os.path.join(image_dir, name))
                if os.path.isfile(path):
                    files.append((report, entry.get("id"), path))
    first_seen = {}  # a key of the file -> (report, image id, path) of its first set
    added = 0
    for report, image_id, path, key in _keys(files):
        earlier = first_seen.setdefault(key, (report, image_id, path))
        if earlier[0] is report:
            continue
        how = "the same file" if earlier[2] == path else f"the same content as {earlier[2]}"
        report.add("image_in_another_set", f"image {image_id} is also image {earlier[1]} of set "
                   f"'{earlier[0].set_name}' ({how}): a model trained on one set is scored on the other; keep "
                   "each image in one set", file=path, item_id=image_id)
        added += 1
    return added


def _keys(files):
    """(report, image id, path, key) of every file, in the sets' order: key ('content', size,
    SHA-256) for a file whose size a file of another set shares (a file listed by two sets
    included), else ('path', real path)."""
    sets_of_size, sizes, digests = {}, {}, {}
    for report, _, path in files:
        sizes[path] = os.path.getsize(path)
        sets_of_size.setdefault(sizes[path], set()).add(id(report))
    for report, image_id, path in files:
        if len(sets_of_size[sizes[path]]) == 1:
            yield report, image_id, path, ("path", path)
        else:
            if path not in digests:
                digests[path] = _sha256(path)
            yield report, image_id, path, ("content", sizes[path], digests[path])


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
