"""Stable payload types and header extension ids in the emulator's re-offers.

Every ``createOffer`` of aiortc (1.x) starts again from its own defaults: Opus on payload
type 96, ``sdes:mid`` on header extension id 1, and so on, even for m-sections already
negotiated with other values. Browsers reject that: within one BUNDLE group an id or a
payload type may not change meaning (RFC 8843 section 7.5; Chromium: "The BUNDLE group
contains MID:0 requiring the RTP header extension ... (mid=0)"), and JSEP (RFC 8829
section 5.2.2) says a subsequent offer keeps the negotiated ones. Cloudflare Calls keeps
them, so the emulator must too: :func:`stable_offer` rewrites aiortc's offer with the
payload types and extension ids the remote side already uses.

aiortc's answers also list every m-section in their BUNDLE group, even those the offer
rejected (port 0, e.g. a transceiver the browser stopped to close a track) and left out
of its own group; a browser refuses such an answer ("A BUNDLE group in answer contains a
MID='4' that was not in the offered group"). :func:`consistent_answer` keeps the answer's
group within the offer's and rejects what the offer rejected (RFC 8843 section 7.3).

aiortc takes the payload types and ids of the remote answer when it applies it, so what
it sends afterwards matches the rewritten offer.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

__all__ = ["consistent_answer", "stable_offer"]

_DYNAMIC_PTS = range(96, 128)
_EXTENSION_IDS = range(1, 15)


def _codec_key(kind: str, codec) -> tuple:
    apt = codec.parameters.get("apt") if codec.mimeType.lower().endswith("/rtx") else None
    return (kind, codec.mimeType.lower(), codec.clockRate, codec.channels or 1, apt)


def stable_offer(pc: RTCPeerConnection, offer: RTCSessionDescription) -> RTCSessionDescription:
    """Return ``offer`` (made by ``pc.createOffer()``) with the payload types and header
    extension ids of ``pc``'s current remote description wherever both name the same
    codec or extension; other codecs and extensions keep theirs unless taken, else get
    a free one. Returns ``offer`` unchanged when there is no remote description yet.

    Args:
        pc: the peer connection that made ``offer``.
        offer: the SDP offer to rewrite (``type == "offer"``).

    Returns:
        The offer to pass to ``pc.setLocalDescription``.
    """
    remote = pc.remoteDescription
    if remote is None or offer.type != "offer":
        return offer
    known = aiortc_sdp.SessionDescription.parse(remote.sdp)
    pts: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    for media in known.media:
        if media.kind not in ("audio", "video"):
            continue
        by_pt = {c.payloadType: c for c in media.rtp.codecs}
        for codec in media.rtp.codecs:
            key = _codec_key(media.kind, codec)
            if key[4] is not None:  # rtx: key it by the codec it repairs
                base = by_pt.get(int(key[4]))
                key = key[:4] + (_codec_key(media.kind, base)[1:4] if base else None,)
            pts.setdefault(key, codec.payloadType)
        for ext in media.rtp.headerExtensions:
            ids.setdefault(ext.uri, ext.id)
    if not pts and not ids:
        return offer
    description = aiortc_sdp.SessionDescription.parse(offer.sdp)
    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        _remap_codecs(media, pts)
        _remap_extensions(media, ids)
    return RTCSessionDescription(sdp=str(description), type="offer")


def _remap_codecs(media, pts: dict[tuple, int]) -> None:
    taken = set(pts.values())
    mapping: dict[int, int] = {}
    originals = {c.payloadType: c for c in media.rtp.codecs}
    for codec in media.rtp.codecs:  # primary codecs first, rtx after their base
        if codec.mimeType.lower().endswith("/rtx"):
            continue
        mapping[codec.payloadType] = pts.get(_codec_key(media.kind, codec), -1)
    for codec in media.rtp.codecs:
        if not codec.mimeType.lower().endswith("/rtx"):
            continue
        base = originals.get(int(codec.parameters.get("apt", -1)))
        key = _codec_key(media.kind, codec)[:4] + (
            _codec_key(media.kind, base)[1:4] if base else None,)
        mapping[codec.payloadType] = pts.get(key, -1)
    for old, new in list(mapping.items()):
        if new == -1:  # unknown to the remote side: keep it if free, else a free one
            if old not in taken:
                mapping[old] = old
            else:
                mapping[old] = next(pt for pt in _DYNAMIC_PTS
                                    if pt not in taken and pt not in mapping.values())
            taken.add(mapping[old])
    for codec in media.rtp.codecs:
        codec.payloadType = mapping[codec.payloadType]
        if "apt" in codec.parameters:
            codec.parameters["apt"] = mapping.get(int(codec.parameters["apt"]),
                                                  codec.parameters["apt"])
    media.fmt = [mapping.get(pt, pt) for pt in media.fmt]


def _remap_extensions(media, ids: dict[str, int]) -> None:
    taken = set(ids.values())
    for ext in media.rtp.headerExtensions:
        if ext.uri in ids:
            ext.id = ids[ext.uri]
        elif ext.id in taken:
            ext.id = next(i for i in _EXTENSION_IDS if i not in taken)
            taken.add(ext.id)
        else:
            taken.add(ext.id)


def consistent_answer(offer: RTCSessionDescription,
                      answer: RTCSessionDescription) -> RTCSessionDescription:
    """Return ``answer`` (made by aiortc for ``offer``) with its BUNDLE group reduced to
    the mids the offer bundles, and the m-sections the offer rejected (port 0) rejected
    too. Returns ``answer`` unchanged when there is nothing to fix.

    Args:
        offer: the remote offer that was applied.
        answer: aiortc's answer to it (``type == "answer"``).

    Returns:
        The answer to pass to ``setLocalDescription``.
    """
    remote = aiortc_sdp.SessionDescription.parse(offer.sdp)
    offered = {mid for group in remote.group if group.semantic == "BUNDLE"
               for mid in group.items}
    rejected = {m.rtp.muxId for m in remote.media if m.port == 0}
    description = aiortc_sdp.SessionDescription.parse(answer.sdp)
    changed = False
    for group in description.group:
        if group.semantic != "BUNDLE":
            continue
        items = [mid for mid in group.items if mid in offered and mid not in rejected]
        if items != group.items:
            group.items[:] = items
            changed = True
    for media in description.media:
        if media.rtp.muxId in rejected and media.port != 0:
            media.port = 0
            media.direction = "inactive"
            changed = True
    if not changed:
        return answer
    return RTCSessionDescription(sdp=str(description), type="answer")
