#!/usr/bin/python3
"""Prove headless Chromium can load/decode the <video> elements of a page.

Usage: browser_video.py --url URL [--timeout 30] [--selector video]

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe:
fd 3 = commands in, fd 4 = replies out, NUL-terminated JSON) and polls every
element matching the selector until all have readyState >= 3 (HAVE_FUTURE_DATA),
one reports a media error, or the timeout passes. `--dump-dom` is not used: it
returns at the page load event (or when virtual time runs out), neither of which
is tied to readyState, and a stalled media fetch can block it indefinitely.

Prints one JSON line: {"videos":[{src,readyState,duration,videoWidth,
videoHeight,error}],"ok":bool[,"reason":str]}; exits 0 if ok, else 1.
Chromium binary: $CHROMIUM (default "chromium"). Standard library only.
"""
import argparse, fcntl, json, os, select, shutil, signal, subprocess, sys, tempfile, time

PROBE = """JSON.stringify(Array.from(document.querySelectorAll(%s)).map(v => ({
  src: v.currentSrc || v.src || null, readyState: v.readyState,
  duration: isFinite(v.duration) ? v.duration : null,
  videoWidth: v.videoWidth, videoHeight: v.videoHeight,
  error: v.error ? v.error.code : null})))"""


class Cdp:
    """Minimal blocking CDP client over the two pipes; every read is bounded by `deadline`."""

    def __init__(self, to_chrome, from_chrome, deadline):
        self.w, self.r, self.deadline, self.buf, self.next_id = to_chrome, from_chrome, deadline, b"", 0

    def call(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:  # skip events and unrelated replies until ours arrives
            while b"\0" not in self.buf:
                left = self.deadline - time.monotonic()
                if left <= 0 or not select.select([self.r], [], [], left)[0]:
                    raise TimeoutError("no DevTools reply to " + method)
                chunk = os.read(self.r, 1 << 16)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})


def on_sigterm(*_):
    raise RuntimeError("terminated by SIGTERM")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--timeout", type=float, default=30.0, help="hard bound, seconds, incl. startup")
    ap.add_argument("--selector", default="video")
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    # SIGTERM from a test harness becomes an error: cleanup runs and the JSON line still prints.
    signal.signal(signal.SIGTERM, on_sigterm)
    profile = tempfile.mkdtemp(prefix="browser_video-")
    cmd_r, cmd_w = os.pipe()  # we write commands -> chromium reads on fd 3
    out_r, out_w = os.pipe()  # chromium writes replies on fd 4 -> we read
    # Park the child's ends at fds >= 10 so the dup2 onto 3/4 can never clobber them.
    hi_r, hi_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, out_w))
    argv = [os.environ.get("CHROMIUM", "chromium"),
            "--headless=new",           # no display server needed
            "--no-sandbox",             # tests run as root / in containers without userns
            "--disable-gpu",            # no GPU in CI; video decodes in software (ffmpeg)
            "--remote-debugging-pipe",  # DevTools over fds 3/4 instead of a TCP port
            f"--user-data-dir={profile}",  # throwaway profile, no clash with other instances
            "--no-first-run", "--no-default-browser-check",  # no first-run UI/work
            "--mute-audio",             # containers have no sound device
            "about:blank"]
    proc = None
    result = {"videos": [], "ok": False}
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False,          # our fds are CLOEXEC anyway; keeps the dup2'd 3/4 open
            start_new_session=True,   # own process group, so killpg reaps renderers/zygote too
            preexec_fn=lambda: (os.dup2(hi_r, 3), os.dup2(hi_w, 4)))
        for fd in (cmd_r, out_w, hi_r, hi_w):
            os.close(fd)  # only the child keeps these; EOF on out_r then means it died
        cdp = Cdp(cmd_w, out_r, deadline)
        target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
        session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        # Page.navigate replies once the navigation commits, or with errorText (e.g. refused).
        nav = cdp.call("Page.navigate", session, url=a.url)
        if nav.get("errorText"):
            raise RuntimeError("navigation failed: " + nav["errorText"])
        expr = PROBE % json.dumps(a.selector)
        while True:
            try:
                res = cdp.call("Runtime.evaluate", session, expression=expr, returnByValue=True)
            except RuntimeError:  # e.g. no execution context mid-navigation: retry until deadline
                res = {}
            value = res.get("result", {}).get("value")
            result["videos"] = json.loads(value) if isinstance(value, str) else []
            vids = result["videos"]
            if vids and all(v["readyState"] >= 3 for v in vids):
                result["ok"] = True
                break
            if any(v["error"] is not None for v in vids):
                result["reason"] = "media error"  # MediaError.code: 1 aborted 2 network 3 decode 4 src unsupported
                break
            if time.monotonic() + 0.25 >= deadline:
                result["reason"] = "timeout" if vids else "no element matches selector"
                break
            time.sleep(0.25)
        try:
            cdp.deadline = min(deadline, time.monotonic() + 2) + 0.5
            cdp.call("Browser.close")  # polite shutdown; the killpg below is the guarantee
        except Exception:
            pass
    except Exception as e:
        result["reason"] = f"{type(e).__name__}: {e}"
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
