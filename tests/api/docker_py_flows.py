"""The everyday docker-py flows against `capsa serve` (DOCKER_HOST names it).

Each step asserts what a user of the SDK would check; the script prints one line per
step and exits non-zero at the first that fails.
"""
import io
import sys
import tarfile

import docker

client = docker.from_env(timeout=60)
step = ""


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    print(f"ok {name}")


check("ping", client.ping() is True)
check("version", client.version().get("ApiVersion") is not None)

out = client.containers.run("busybox", ["sh", "-c", "echo hi; echo err >&2"], remove=True)
check("run --rm returns stdout", out == b"hi\n", repr(out))

try:
    client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    check("run exit 3 raises ContainerError", False)
except docker.errors.ContainerError as e:
    check("run exit 3 raises ContainerError", e.exit_status == 3, repr(e))

c = client.containers.run(
    "busybox",
    ["sh", "-c", "echo started; sleep 300"],
    detach=True,
    name="pyflow",
    environment={"GREETING": "hello"},
    labels={"suite": "docker-py"},
)
c.reload()
check("detached is running", c.status == "running", c.status)
check("labels", c.labels.get("suite") == "docker-py", repr(c.labels))
listed = client.containers.list(filters={"label": "suite=docker-py"})
check("list with a label filter", [x.id for x in listed] == [c.id], repr(listed))

# The environment reaches the exec'd command (judged by its exit code: see docs/api.md
# on docker-py reading an exec's first output).
code, output = c.exec_run(["sh", "-c", 'test "$GREETING" = hello'])
check("exec_run", code == 0, repr((code, output)))
code, output = c.exec_run(["sh", "-c", "exit 5"])
check("exec_run exit code", code == 5, repr(code))
# stdout and stderr stay apart (dockerd frames stderr as stream 2), and a `tty` exec started
# without `Tty` (docker-py's default) comes in frames, as dockerd sends it.
api = client.api
e = api.exec_create(c.id, ["sh", "-c", "echo out; echo err >&2"])
out = api.exec_start(e, demux=True)
check("exec demux", out == (b"out\n", b"err\n"), repr(out))
# A stopped container's logs through attach: ready at once, they must not arrive in the
# same read as the `101` headers (docker-py reads those through a buffer and loses the
# rest); five times, as the loss was 4 in 5.
for i in range(5):
    done = api.create_container("busybox", ["echo", f"attach-{i}"])
    api.start(done)
    api.wait(done, condition="not-running")
    out = api.attach(done, stream=False, logs=True)
    api.remove_container(done)
    check(f"attach logs of a stopped container ({i})", out == f"attach-{i}\n".encode(), repr(out))
e = api.exec_create(c.id, ["printf", "tty-line"], tty=True)
out = api.exec_start(e)
check("tty exec started without Tty is framed", out == b"tty-line", repr(out))

check("logs", b"started" in c.logs(), repr(c.logs()))
top = c.top()
check("top", any("sleep" in " ".join(p) for p in top["Processes"]), repr(top))
stats = c.stats(stream=False)
check("stats memory", stats["memory_stats"].get("usage", 0) > 0, repr(stats["memory_stats"]))

data = io.BytesIO()
with tarfile.open(fileobj=data, mode="w") as tar:
    body = b"from the sdk\n"
    info = tarfile.TarInfo("note.txt")
    info.size = len(body)
    tar.addfile(info, io.BytesIO(body))
check("put_archive", c.put_archive("/tmp", data.getvalue()))
chunks, stat = c.get_archive("/tmp/note.txt")
raw = b"".join(chunks)
with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
    got = tar.extractfile("note.txt").read()
check("get_archive", got == b"from the sdk\n" and stat["name"] == "note.txt", repr((got, stat)))

c.stop(timeout=1)
result = c.wait(timeout=30)
check("stop then wait", result["StatusCode"] in (137, 143, 0), repr(result))
c.remove()
check("remove", not client.containers.list(all=True, filters={"name": "pyflow"}))

img = client.images.get("busybox")
img.tag("capsa-sdk/busybox", "v1")
check("tag", "capsa-sdk/busybox:v1" in client.images.get("capsa-sdk/busybox:v1").tags)
client.images.remove("capsa-sdk/busybox:v1")
check("rmi", all("capsa-sdk/busybox:v1" not in i.tags for i in client.images.list()))

net = client.networks.create("sdknet")
check("network create", client.networks.get("sdknet").id == net.id)
net.remove()
vol = client.volumes.create("sdkvol")
check("volume create", client.volumes.get("sdkvol").name == "sdkvol")
vol.remove()
df = client.df()
check("df", "Images" in df and "Containers" in df, repr(df.keys()))

try:
    client.containers.get("no-such-container")
    check("404 is NotFound", False)
except docker.errors.NotFound:
    check("404 is NotFound", True)
print("ALL OK")
