#!/usr/bin/python3
"""RTSP test camera: serves an H.264 MP4 file over RTSP on a loopback port, without re-encoding.

Used by perch's tests (and handy by hand) to stand in for an IP camera:

    /usr/bin/python3 tests/helpers/rtsp_server.py --port 8554 --file clip.mp4 [--user u --password p]

serves rtsp://127.0.0.1:8554/cam. With --user/--password the server demands Basic auth, like a real camera.
Each client session plays the file from the start; with --loop the stream restarts at the end instead of
sending end-of-stream. It prints "READY <url>" on stdout once listening and "CLIENT" for each client
connection, and runs until killed.
Runs with Debian's python3 (PyGObject + gir1.2-gst-rtsp-server-1.0), installed by scripts/setup.sh.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", required=True, help="H.264 MP4 to serve (copied, not re-encoded)")
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--loop", action="store_true", help="restart the file at its end instead of ending the stream")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace('"', '\\"')
    if args.loop:
        # Decoding is needed to loop seamlessly; re-encode at camera-like settings (GOP 1 s).
        launch = (
            f'( multifilesrc location="{location}" loop=true ! qtdemux ! h264parse ! avdec_h264 ! '
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
    else:
        launch = f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )'
    factory.set_launch(launch)
    factory.set_shared(False)

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "camera-user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("camera-user", "media.factory.access", True)
        permissions.add_permission_for_role("camera-user", "media.factory.construct", True)
        factory.set_permissions(permissions)

    server.get_mount_points().add_factory(args.path, factory)
    # One line per client connection, so tests can count the sessions a camera client opens.
    server.connect("client-connected", lambda *_: print("CLIENT", flush=True))
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
