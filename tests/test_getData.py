"""getData.sh against a local HTTP server serving small COCO-shaped zips built from coco_mini."""
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest

from support.testing import REPO
from support.coco_mini import make_coco_dir
import coco_data_loader

ZIPS = ('zips/train2017.zip', 'zips/val2017.zip', 'annotations/annotations_trainval2017.zip')

# http.server with byte ranges (python -m http.server ignores Range) and a request log.
RANGE_SERVER = textwrap.dedent('''
    import http.server, os, sys
    class H(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            with open(os.environ["REQUEST_LOG"], "a") as f:
                f.write("%s %s %s\\n" % (self.command, self.path, self.headers.get("Range", "-")))
        def send_head(self):
            rng = self.headers.get("Range")
            path = self.translate_path(self.path)
            if not rng or not os.path.isfile(path):
                return super().send_head()
            start = int(rng.split("=")[1].split("-")[0])
            size = os.path.getsize(path)
            f = open(path, "rb")
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            return f
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
''')


def build_zips(root, coco):
    """The three COCO zips (same layout as cocodataset.org's) under ``root``."""
    os.makedirs(os.path.join(root, 'zips'))
    os.makedirs(os.path.join(root, 'annotations'))
    for split in ('train', 'val'):
        with zipfile.ZipFile(os.path.join(root, 'zips', '%s2017.zip' % split), 'w') as z:
            z.write(os.path.join(coco, '%s2017' % split), '%s2017/' % split)
            for f in sorted(os.listdir(os.path.join(coco, '%s2017' % split))):
                z.write(os.path.join(coco, '%s2017' % split, f), '%s2017/%s' % (split, f))
    with zipfile.ZipFile(os.path.join(root, 'annotations', 'annotations_trainval2017.zip'),
                         'w') as z:
        for split in ('train', 'val'):
            name = 'annotations/person_keypoints_%s2017.json' % split
            z.write(os.path.join(coco, name), name)
    with open(os.path.join(root, 'md5sums'), 'w') as f:
        for rel in ZIPS:
            with open(os.path.join(root, rel), 'rb') as g:
                f.write('%s  %s\n' % (hashlib.md5(g.read()).hexdigest(), os.path.basename(rel)))


@pytest.fixture
def server(tmp_path):
    src = make_coco_dir(str(tmp_path / 'src'), link=False)
    www = str(tmp_path / 'www')
    build_zips(www, src)
    log = str(tmp_path / 'requests.log')
    open(log, 'w').close()
    script = tmp_path / 'server.py'
    script.write_text(RANGE_SERVER)
    p = subprocess.Popen([sys.executable, str(script)], cwd=www, stdout=subprocess.PIPE,
                         env=dict(os.environ, REQUEST_LOG=log), text=True)
    port = int(p.stdout.readline())
    yield {'url': 'http://127.0.0.1:%d' % port, 'www': www, 'log': log, 'src': src}
    p.kill()
    p.wait()


def run_getdata(server, cwd, *args, md5=True, **env):
    e = dict(os.environ, COCO_URL_BASE=server['url'])
    if md5:
        e['COCO_MD5SUMS'] = os.path.join(server['www'], 'md5sums')
    e.update(env)
    return subprocess.run(['bash', os.path.join(REPO, 'getData.sh')] + list(args), cwd=str(cwd),
                          env=e, capture_output=True, text=True, timeout=60)


def error_lines(p):
    """Error lines on stderr (curl's progress meter also goes there); the last must be one."""
    assert p.stderr.splitlines()[-1].startswith('getData.sh: error: ')
    return sum(1 for line in p.stderr.splitlines() if 'error' in line)


def requests(server):
    with open(server['log']) as f:
        return [line.split() for line in f]


def test_download_lands_where_entity_expects_and_rerun_downloads_nothing(server, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    p = run_getdata(server, work)  # no DIR: entity.params['coco_dir'] under the cwd
    assert p.returncode == 0, p.stderr
    coco_dir = str(work / coco_data_loader.params['coco_dir'])
    for split in ('train', 'val'):
        ann, img_dir, _ = coco_data_loader.split_paths(coco_dir, split)
        with open(os.path.join(server['src'], 'annotations',
                               'person_keypoints_%s2017.json' % split), 'rb') as f:
            assert open(ann, 'rb').read() == f.read()
        assert sorted(os.listdir(img_dir)) == sorted(
            os.listdir(os.path.join(server['src'], '%s2017' % split)))
    coco_data_loader.load_coco(coco_dir, 'val')  # the annotations load
    # zips removed, nothing temporary left
    assert sorted(os.listdir(coco_dir)) == sorted(
        ['.complete_train2017.zip', '.complete_val2017.zip',
         '.complete_annotations_trainval2017.zip', 'annotations', 'train2017', 'val2017'])
    gets = [r for r in requests(server) if r[0] == 'GET']
    assert len(gets) == 3

    n = len(requests(server))
    p = run_getdata(server, work)
    assert p.returncode == 0, p.stderr
    assert len(requests(server)) == n  # not even a HEAD
    assert p.stdout.count('skipping') == 3


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / 'coco'
    dest.mkdir()
    full = open(os.path.join(server['www'], 'zips', 'train2017.zip'), 'rb').read()
    half = len(full) // 2
    (dest / 'train2017.zip.part').write_bytes(full[:half])
    p = run_getdata(server, tmp_path, str(dest), COCO_FILES='zips/train2017.zip', KEEP_ZIPS='1')
    assert p.returncode == 0, p.stderr
    gets = [r for r in requests(server) if r[0] == 'GET']
    assert gets == [['GET', '/zips/train2017.zip', 'bytes=%d-' % half]]
    assert (dest / 'train2017.zip').read_bytes() == full
    assert len(os.listdir(dest / 'train2017')) == 4


def test_server_without_byte_ranges_restarts_the_download(server, tmp_path):
    # the stock `python -m http.server`: no Range support, curl exits 33, the script restarts
    port_sock = socket.socket()
    port_sock.bind(('127.0.0.1', 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    p = subprocess.Popen([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', str(port)],
                         cwd=server['www'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        dest = tmp_path / 'coco'
        dest.mkdir()
        full = open(os.path.join(server['www'], 'zips', 'val2017.zip'), 'rb').read()
        (dest / 'val2017.zip.part').write_bytes(full[:1000])
        r = run_getdata({'url': 'http://127.0.0.1:%d' % port, 'www': server['www']}, tmp_path,
                        str(dest), COCO_FILES='zips/val2017.zip')
        assert r.returncode == 0, r.stderr
        assert 'cannot resume' in r.stdout
        assert sorted(os.listdir(dest / 'val2017')) == ['000000000785.jpg', '000000040083.jpg']
    finally:
        p.kill()
        p.wait()


def test_truncated_zip_is_detected_and_nothing_extracted(server, tmp_path):
    path = os.path.join(server['www'], 'zips', 'val2017.zip')
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) * 2 // 3])  # the server itself serves a cut file
    dest = tmp_path / 'coco'
    # without a checksum the zip's own directory and CRCs catch it
    empty = tmp_path / 'no_md5s'
    empty.write_text('')
    p = run_getdata(server, tmp_path, str(dest), md5=False, COCO_FILES='zips/val2017.zip',
                    COCO_MD5SUMS=str(empty))
    assert p.returncode != 0
    assert error_lines(p) == 1 and 'truncated' in p.stderr and 'val2017.zip' in p.stderr
    assert os.listdir(dest) == []
    # with a checksum (the published ones by default) the MD5 catches it first
    p = run_getdata(server, tmp_path, str(dest), COCO_FILES='zips/val2017.zip')
    assert p.returncode != 0
    assert error_lines(p) == 1 and 'MD5' in p.stderr
    assert os.listdir(dest) == []


def test_offline_is_one_line_error_and_leaves_nothing(tmp_path):
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    dest = tmp_path / 'coco'
    p = subprocess.run(['bash', os.path.join(REPO, 'getData.sh'), str(dest)],
                       env=dict(os.environ, COCO_URL_BASE='http://127.0.0.1:%d' % port),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert p.stderr.count('\n') == 1 and 'cannot reach' in p.stderr, p.stderr
    assert p.stderr.startswith('getData.sh: error: cannot reach http://127.0.0.1:%d/' % port)
    assert os.listdir(dest) == []
