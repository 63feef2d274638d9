"""A real RTSP camera for tests: GStreamer's RTSP server looping H.264 clips at their own frame rate.

Run by Debian's own python3 (python3-gi, gir1.2-gst-rtsp-server-1.0), a separate process from the
project's Python (`rtsp_camera.RtspCamera` starts and stops it):

    /usr/bin/python3 tests/rtsp_server.py PORT /cam0=clip0.mp4 [/cam1=clip1.mp4 ...] [--auth USER:PASS]

Each clip (MP4, H.264) is served at rtsp://127.0.0.1:PORT/camN through filesrc, qtdemux, h264parse
and rtph264pay: no encoder. Every client gets its own pipeline from the start of the clip; at the
clip's end the demuxer is sent back to its start with a non-flushing seek, so the stream's time
goes on and the clip plays in a loop for ever. With --auth, clients must log in (401 otherwise).
Prints "ready" on stdout once listening.
"""

import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

HELD: dict[str, tuple[Gst.Pad, int]] = {}  # a media's bin name -> (pad, probe) holding its first buffer


def loop_clip(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    """Play the clip as segments: at each segment's end, seek its demuxer back to the start
    without flushing, so the stream goes on and its time keeps increasing.

    The first seek flushes the prerolled media; its first buffer is then held (`HELD`) until the
    client's PLAY (`release`). While it is held, the clip's length is unknown to the server and
    the SDP's range stays open (npt=0-), as a camera's, however long the client takes."""
    element = media.get_element()
    demux, parse_sink = element.get_by_name("demux"), element.get_by_name("parse").get_static_pad("sink")

    def seek(flags: Gst.SeekFlags) -> bool:
        demux.seek(1.0, Gst.Format.TIME, flags | Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        return False

    def on_event(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.get_event().type == Gst.EventType.SEGMENT_DONE:
            GLib.idle_add(seek, Gst.SeekFlags.NONE)
        return Gst.PadProbeReturn.OK

    def start(media: GstRtspServer.RTSPMedia) -> None:
        probe = parse_sink.add_probe(Gst.PadProbeType.BLOCK_DOWNSTREAM | Gst.PadProbeType.BUFFER,
                                     lambda *_: Gst.PadProbeReturn.OK)
        HELD[element.get_name()] = (parse_sink, probe)
        seek(Gst.SeekFlags.FLUSH)

    parse_sink.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)
    media.connect("prepared", start)


def release(client: GstRtspServer.RTSPClient, context: GstRtspServer.RTSPContext) -> GstRtsp.RTSPStatusCode:
    """At a PLAY: let the held buffer go and wait until the payloader has its segment again. The
    flushing seek cleared it, and a PLAY answered before the demuxer sends the next makes the
    server abort (gst_rtsp_media_get_rates asserts on a stream without a segment)."""
    element = context.media.get_element()
    held = HELD.pop(element.get_name(), None)
    if held is not None:
        held[0].remove_probe(held[1])
    pay = element.get_by_name("pay0").get_static_pad("src")
    deadline = time.monotonic() + 10.0
    while pay.get_sticky_event(Gst.EventType.SEGMENT, 0) is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return GstRtsp.RTSPStatusCode.OK


def main(argv: list[str]) -> None:
    Gst.init(None)
    port, mounts = argv[0], [a for a in argv[1:] if not a.startswith("--")]
    auth = argv[argv.index("--auth") + 1] if "--auth" in argv else None
    if auth:
        mounts.remove(auth)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for mount in mounts:
        path, clip = mount.split("=", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f'( filesrc location="{clip}" ! qtdemux name=demux ! h264parse name=parse '
                           "! rtph264pay name=pay0 pt=96 config-interval=1 )")
        factory.set_shared(False)
        factory.connect("media-configure", loop_clip)
        if auth:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role("viewer", "media.factory.access", True)
            permissions.add_permission_for_role("viewer", "media.factory.construct", True)
            factory.set_permissions(permissions)
        server.get_mount_points().add_factory(path, factory)
    if auth:
        user, password = auth.split(":", 1)
        checker = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        checker.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(checker)
    server.connect("client-connected", lambda _, client: client.connect("pre-play-request", release))
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1:])
