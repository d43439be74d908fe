"""Remote image URLs (``--allow-remote-images``), fetched without reaching private networks.

Every hop of a fetch is checked before anything connects: ``http``/``https`` only, no
credentials in the URL, and every address the host resolves to must be a public
unicast address (not loopback, private, shared, link-local, multicast, reserved or
unspecified; the IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address
is checked too). The connection is then made to the checked address itself (the
hostname still goes in the Host header and the TLS handshake), so a second DNS answer
cannot send it elsewhere. Redirects are followed by hand, at most ``MAX_REDIRECTS``,
each hop checked again; proxies from the environment are not used. The whole fetch has
one deadline. Every failure after the URL's own form was checked answers the same 400
(``image_fetch_failed``, one message), so answers reveal nothing about which hosts or
ports the server can reach; the operator's log says what happened.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

import httpx

from stvcli.serve.errors import ApiError, bad_request, image_too_large

log = logging.getLogger("stvcli.serve")

MAX_REDIRECTS = 3
FETCH_TIMEOUT_S = 10.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Refused(Exception):
    """A fetch that cannot go on (the reason is for the log, never for the client)."""


def address_allowed(address: str) -> bool:
    """Whether a fetch may connect to ``address``: a public unicast address only."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _public(ip.ipv4_mapped)  # an IPv6 socket reaches exactly that IPv4 address
    return all(_public(candidate) for candidate in _with_embedded_ipv4(ip))


def _public(ip: IPAddress) -> bool:
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified
                                 or (ip.version == 6 and ip.is_site_local))


def _with_embedded_ipv4(ip: IPAddress) -> list[IPAddress]:
    """``ip`` and any IPv4 address an IPv6 address carries (6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip.teredo is not None:
            found.extend(ip.teredo)
        if any(ip in network for network in _NAT64):
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_url(url: str | httpx.URL) -> httpx.URL:
    """``url`` if its form is fetchable (http(s), a host, no credentials); ``_Refused`` otherwise."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise _Refused(f"malformed URL ({error})") from None
    if parsed.scheme not in ("http", "https"):
        raise _Refused(f"scheme {parsed.scheme!r}")
    if parsed.userinfo:
        raise _Refused("credentials in the URL")
    if not parsed.raw_host:
        raise _Refused("no host")
    return parsed


async def fetch(url: str, *, max_bytes: int, param: str) -> bytes:
    """The bytes at ``url`` (at most ``max_bytes``); a 400 when they cannot be had."""
    try:
        target = checked_url(url)
    except _Refused as error:
        raise bad_request(f"image_url is not a fetchable URL: {error}; use http(s)://host/path without "
                          "user:password@", param=param, code="invalid_image_url") from None
    try:
        return await asyncio.wait_for(_follow(target, max_bytes, param), FETCH_TIMEOUT_S)  # one deadline for all
    except ApiError:
        raise  # the image is too large: only a fetch that reached a public server learns that
    except Exception as error:  # noqa: BLE001 - every failure answers the same
        log.info("remote image %s not fetched: %s: %s", _for_log(target), type(error).__name__, error)
        raise bad_request(f"the image could not be fetched from its URL (only public http(s) addresses are "
                          f"fetched, with at most {MAX_REDIRECTS} redirects and a {FETCH_TIMEOUT_S:g} s limit)",
                          param=param, code="image_fetch_failed") from None


async def _follow(url: httpx.URL, max_bytes: int, param: str) -> bytes:
    limits = httpx.Limits(max_keepalive_connections=0)  # no connection is reused for another hop
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, limits=limits,
                                 timeout=FETCH_TIMEOUT_S) as client:
        for _ in range(MAX_REDIRECTS + 1):
            response = await _get(client, url)
            try:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise _Refused(f"HTTP {response.status_code} without a Location")
                    url = checked_url(url.join(location))
                    continue
                if response.status_code != 200:
                    raise _Refused(f"HTTP {response.status_code}")
                return await _read_capped(response, max_bytes, param)
            finally:
                await response.aclose()
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


async def _get(client: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
    """GET ``url`` from one of its host's checked addresses (the first that connects)."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await resolve_host(host, port)
    refused = [address for address in addresses if not address_allowed(address)]
    if not addresses or refused:
        raise _Refused(f"{host} resolves to a non-public address ({', '.join(refused) or 'none'})")
    error: Exception = _Refused(f"{host}: nothing to connect to")
    for address in addresses:
        request = client.build_request("GET", url.copy_with(host=address),
                                       headers={"Host": url.netloc.decode("ascii")},
                                       extensions={"sni_hostname": host})
        try:
            return await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as failure:
            error = failure
    raise error


async def _read_capped(response: httpx.Response, max_bytes: int, param: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise image_too_large(max_bytes, param)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise image_too_large(max_bytes, param)
        chunks.append(chunk)
    return b"".join(chunks)


def _for_log(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"  # no query: it may carry tokens
