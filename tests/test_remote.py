"""Data leaves the machine and comes back intact: `dvc push` to an S3 remote, `dvc pull` from it in a fresh clone, against
a real S3 API (moto's server, started here on loopback, fake credentials). The bucket then holds exactly the objects DVC
pushed, under DVC's content-addressed names (`files/md5/xx/...`), and the clone gets the same bytes back. A remote whose
bucket does not exist fails, push and pull alike, with S3's NoSuchBucket, instead of reporting that everything is up to date."""
import json, os, re, subprocess, time, urllib.request
from pathlib import Path
import pytest
import yaml
from conftest import BIN, free_port, run

BUCKET = "agent-loop-data"
# Fake credentials, a region, and nothing from this machine's ~/.aws: the test must not depend on, or reach, a real account.
# (A path that does not exist, not os.devnull: dvc-s3 checks that the file exists, then botocore refuses one that is no file.)
NO_FILE = "/nonexistent/agent-loop-test/aws"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": NO_FILE, "AWS_SHARED_CREDENTIALS_FILE": NO_FILE, "AWS_EC2_METADATA_DISABLED": "true"}
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
TIMEOUT = 60  # per command: a hung S3 call should fail the test, not stall the suite


@pytest.fixture(scope="module")
def s3():
    "moto's S3 server on a free loopback port, with an empty bucket; yields its endpoint URL and a boto3 client; always stopped."
    import boto3
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=os.environ | AWS,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None: raise AssertionError(f"moto_server exited ({proc.returncode})")
            try:
                urllib.request.urlopen(url, timeout=2); break
            except Exception:
                if time.time() > deadline: raise AssertionError("moto_server did not come up")
                time.sleep(0.2)
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield url, client
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()


def dvc(args, cwd, env=None, check=True):
    "`dvc ...` in `cwd`, without analytics, with the fake AWS environment (plus `env`)."
    return run([str(BIN / "dvc"), *args], cwd, check=check, env=AWS | {"DVC_NO_ANALYTICS": "1"} | (env or {}), timeout=TIMEOUT)


def git(args, cwd):
    return run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd, timeout=TIMEOUT)


def md5s(repo: Path) -> set[str]:
    "The md5 of every output the repo's .dvc files record: a file's, or a directory's `.dir` listing and each file in it."
    out = set()
    for f in repo.glob("*.dvc"):
        if not f.is_file(): continue  # the .dvc folder itself
        for o in yaml.safe_load(f.read_text())["outs"]:
            out.add(o["md5"])
            if o["md5"].endswith(".dir"):
                out |= {e["md5"] for e in json.loads((repo / ".dvc/cache/files/md5" / o["md5"][:2] / o["md5"][2:]).read_text())}
    return out


def make_repo(path: Path, endpoint: str) -> Path:
    "A throwaway git + DVC repo: a file and a directory tracked by DVC, an S3 remote as default, credentials only in config.local."
    path.mkdir()
    git(["init", "-q"], path); dvc(["init", "-q"], path)
    (path / "train.jsonl").write_bytes(b'{"q": "37 times 12", "a": 444}\n' + bytes(range(256)))  # binary too: bytes, not text, must survive
    (path / "logs").mkdir()
    (path / "logs" / "a.jsonl").write_text('{"turn": 1}\n'); (path / "logs" / "b.jsonl").write_text('{"turn": 2}\n')
    dvc(["add", "-q", "train.jsonl", "logs"], path)
    dvc(["remote", "add", "-d", "store", f"s3://{BUCKET}/store"], path)
    dvc(["remote", "modify", "store", "endpointurl", endpoint], path)
    # secrets go to .dvc/config.local, which `dvc init` git-ignores: the clone below must not see them
    dvc(["remote", "modify", "--local", "store", "access_key_id", "testing"], path)
    dvc(["remote", "modify", "--local", "store", "secret_access_key", "testing"], path)
    git(["add", "-A"], path); git(["commit", "-qm", "data"], path)
    return path


def test_push_then_pull_in_a_clone(s3, tmp_path):
    endpoint, client = s3
    origin = make_repo(tmp_path / "origin", endpoint)
    assert "config.local" not in run(["git", "ls-files", ".dvc"], origin).stdout
    # no credentials in the environment: the push can only have used those in config.local
    res = dvc(["push"], origin, env=NO_CREDENTIALS)
    pushed = int(re.search(r"(\d+) files? pushed", res.stdout + res.stderr).group(1))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="store/").get("Contents", [])]
    expected = md5s(origin)
    assert pushed == len(keys) == len(expected) == 4, (res.stdout, keys)  # two files, the directory's two files and its listing
    assert all(re.fullmatch(r"store/files/md5/[0-9a-f]{2}/[0-9a-f]{30}(\.dir)?", k) for k in keys), keys
    assert {k.split("/")[-2] + k.split("/")[-1] for k in keys} == expected

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, timeout=TIMEOUT)
    assert not (clone / "train.jsonl").exists() and not (clone / ".dvc" / "config.local").exists()
    # the clone has the remote's URL and endpoint (committed) but not its credentials: they come from the environment here
    dvc(["pull"], clone)
    for name in ("train.jsonl", "logs/a.jsonl", "logs/b.jsonl"):
        assert (clone / name).read_bytes() == (origin / name).read_bytes(), name
    assert "Cache and remote 'store' are in sync" in dvc(["status", "-c"], clone).stdout


def test_pull_from_a_missing_bucket_fails(s3, tmp_path):
    endpoint, client = s3
    repo = make_repo(tmp_path / "repo", endpoint)
    dvc(["remote", "add", "nowhere", "s3://no-such-bucket/store"], repo)
    dvc(["remote", "modify", "nowhere", "endpointurl", endpoint], repo)
    git(["commit", "-qam", "a second remote"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, timeout=TIMEOUT)
    # push from the repo (which has the data), pull into a clone (which has none, so the pull must ask the remote)
    for cmd, cwd in ((["push", "-r", "nowhere"], repo), (["pull", "-r", "nowhere"], clone)):
        res = dvc(cmd, cwd, check=False)
        # S3's own words reach the user (DVC's message does not name the bucket: the remote named on the command line does)
        assert res.returncode != 0, (cmd, res.stdout, res.stderr)
        assert "NoSuchBucket" in res.stderr and "The specified bucket does not exist" in res.stderr, (cmd, res.stderr)
    assert not (clone / "train.jsonl").exists()
