"""Deterministic synthetic data for the ``generate`` command.

The output depends only on (size, kind, seed) and this module's code: every random choice comes
from a ``random.Random`` seeded per call, using only its integer/bytes methods, whose output is
stable across platforms and Python versions. Multi-byte random values are decoded little-endian
explicitly. A longer output need not start with a shorter one.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence

__all__ = ["CHUNK_BYTES", "DEFAULT_MAX_SIZE", "KINDS", "GenerateError", "generate", "iter_generate"]

KINDS = ("text", "json", "log", "random", "zeros")
#: The largest output by default (a server's ``max_generate_bytes`` sets its own): bytes are
#: made a chunk at a time, so the cap bounds CPU time, not memory.
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
#: Bytes per chunk of :func:`iter_generate`.
CHUNK_BYTES = 256 * 1024

_BLOCK = 1 << 20  # bytes assembled per step (approximately)
_LINES_BYTES = 64 * 1024  # lines of json and log gathered into one part


class GenerateError(ValueError):
    """An argument of generate() is invalid."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _u16(rng: random.Random, n: int) -> array[int]:
    """Return ``n`` random 16-bit integers (little-endian decoding on every machine)."""
    values = array("H", rng.randbytes(2 * n))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def _cut(parts: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The parts of a generator up to ``size`` bytes in all, the last one cut."""
    left = size
    for part in parts:
        if len(part) >= left:
            yield part[:left] if len(part) > left else part
            return
        left -= len(part)
        yield part
    raise AssertionError("generator produced too few bytes")


def _gathered(lines: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Lines (of json and log) joined into parts of about ``_LINES_BYTES``, until they hold
    ``size`` bytes in all."""
    part: list[bytes] = []
    total = gathered = 0
    for line in lines:
        part.append(line)
        gathered += len(line)
        if gathered >= _LINES_BYTES or total + gathered >= size:
            yield b"".join(part)
            total += gathered
            if total >= size:
                return
            part.clear()
            gathered = 0


def _rechunk(parts: Iterator[bytes], chunk_bytes: int) -> Iterator[bytes]:
    """The same bytes in chunks of ``chunk_bytes`` (the last may be shorter)."""
    buf = bytearray()
    for part in parts:
        if not buf and len(part) == chunk_bytes:
            yield part
            continue
        buf += part
        while len(buf) >= chunk_bytes:
            yield bytes(buf[:chunk_bytes])
            del buf[:chunk_bytes]
    if buf:
        yield bytes(buf)


def _table(items: Sequence[bytes], weights: Sequence[int], slots: int = 1 << 16) -> list[bytes]:
    """Expand weighted items into a lookup table of ``slots`` entries (each item at least once).

    Integer arithmetic only, so that the table is the same on every platform.
    """
    total = sum(weights)
    counts = [max(1, (2 * w * slots + total) // (2 * total)) for w in weights]
    # Adjust the most frequent item so that the table has exactly ``slots`` entries.
    top = max(range(len(counts)), key=counts.__getitem__)
    counts[top] += slots - sum(counts)
    if counts[top] < 1:
        raise AssertionError("too many items for the table")
    table: list[bytes] = []
    for item, count in zip(items, counts, strict=True):
        table.extend([item] * count)
    return table


def _zipf(n: int) -> list[int]:
    """Integer weights proportional to 1/rank."""
    return [10**12 // rank for rank in range(1, n + 1)]


# --- text -------------------------------------------------------------------------------------

# Roughly in order of frequency in English; used with a Zipf-like distribution over rank.
_WORD_TEXT = """
the of and to a in is it you that he was for on are with as his they be at one have this from or
had by not word but what some we can out other were all there when up use your how said an each
she which do their time if will way about many then them write would like so these her long make
thing see him two has look more day could go come did number sound no most people my over know
water than call first who may down side been now find any new work part take get place made live
where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover food
sun four between state keep eye never last let thought city tree cross farm hard start might story
saw far sea draw left late run while press close night real life few north open seem together next
white children begin got walk example ease paper group always music those both mark often letter
until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual
young ready above ever red list though feel talk bird soon body dog family direct pose leave song
measure door product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour better
true during hundred five remember step early hold west ground interest reach fast verb sing listen
six table travel less morning ten simple several vowel toward war lay against pattern slow center
love person money serve appear road map rain rule govern pull cold notice voice unit power town
fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct
able pound done beauty drive stood contain front teach week final gave green quick develop ocean
warm free minute strong special mind behind clear tail produce fact street inch multiply nothing
course stay wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane stead dry wonder laugh thousand ago ran check game shape
equate hot miss brought heat snow tire bring yes distant fill east paint language among grand ball
yet wave drop heart present heavy dance engine position arm wide sail material size vary settle
speak weight general ice matter circle pair include divide syllable felt perhaps pick sudden count
square reason length represent art subject region energy hunt probable bed brother egg ride cell
believe fraction forest sit race window store summer train sleep prove lone leg exercise wall catch
mount wish sky board joy winter sat written wild instrument kept glass grass cow job edge sign
visit past soft fun bright gas weather month million bear finish happy hope flower clothe strange
gone jump baby eight village meet root buy raise solve metal whether push seven paragraph third
shall held hair describe cook floor either result burn hill safe cat century consider type law bit
coast copy phrase silent tall sand soil roll temperature finger industry value fight lie beat
excite natural view sense ear else quite broke case middle kill son lake moment scale loud spring
observe child straight consonant nation dictionary milk speed method organ pay age section dress
cloud surprise quiet stone tiny climb cool design poor lot experiment bottom key iron single stick
flat twenty skin smile crease hole trade melody trip office receive row mouth exact symbol die
least trouble shout except wrote seed tone join suggest clean break lady yard rise bad blow oil
blood touch grew cent mix team wire cost lost brown wear garden equal sent choose fell fit flow
fair bank collect save control decimal gentle woman captain practice separate difficult doctor
please protect noon whose locate ring character insect caught period indicate radio spoke atom
human history effect electric expect crop modern element hit student corner party supply bone
rail imagine provide agree thus capital chair danger fruit rich thick soldier process operate
guess necessary sharp wing create neighbor wash bat rather crowd corn compare poem string bell
depend meat rub tube famous dollar stream fear sight thin triangle planet hurry chief colony clock
mine tie enter major fresh search send yellow gun allow print dead spot desert suit current lift
rose continue block chart hat sell success company subtract event particular deal swim term
opposite wife shoe shoulder spread arrange camp invent cotton born determine quart nine truck
noise level chance gather shop stretch throw shine property column molecule select wrong gray
repeat require broad prepare salt nose plural anger claim continent oxygen sugar death pretty
skill women season solution magnet silver thank branch match suffix especially fig afraid huge
sister steel discuss forward similar guide experience score apple bought led pitch coat mass card
band rope slip win dream evening condition feed tool total basic smell valley nor double seat
arrive master track parent shore division sheet substance favor connect post spend chord fat glad
original share station dad bread charge proper bar offer segment slave duck instant market degree
populate chick dear enemy reply drink occur support speech nature range steam motion path liquid
log meant quotient teeth shell neck
"""
_WORDS = tuple(_WORD_TEXT.split())

_STARTERS = (
    "The",
    "It",
    "In",
    "This",
    "We",
    "A",
    "They",
    "There",
    "But",
    "When",
    "He",
    "She",
    "As",
    "For",
    "If",
    "Some",
    "Each",
    "Then",
    "After",
    "Most",
)

# (separator after a word, weight); "{}" is replaced by a sentence starter.
_SEPARATORS: tuple[tuple[str, int], ...] = (
    (" ", 820),
    (", ", 70),
    ("; ", 6),
    (" - ", 4),
    (". {} ", 60),
    (".\n{} ", 22),
    ("? {} ", 4),
    ("!\n{} ", 2),
    (".\n\n{} ", 8),
    (": ", 4),
)


_TOKENS_PER_ENTRY = 4


@functools.cache
def _text_table() -> list[bytes]:
    """The lookup table for ``text``: 65536 runs of Zipf-weighted words with separators.

    Each entry holds several words so that one lookup yields ~20 bytes (speed); the
    compression ratio is nearly the same as one word per lookup.
    """
    fixed = random.Random(0x7E47)  # fixed: the table is the same for every seed
    word_table = _table([w.encode() for w in _WORDS], _zipf(len(_WORDS)))
    sep_items: list[bytes] = []
    sep_weights: list[int] = []
    for sep, weight in _SEPARATORS:
        if "{}" in sep:
            for starter in _STARTERS:
                sep_items.append(sep.format(starter).encode())
                sep_weights.append(weight)
        else:
            sep_items.append(sep.encode())
            sep_weights.append(weight * len(_STARTERS))
    sep_table = _table(sep_items, sep_weights)
    seps = map(sep_table.__getitem__, _u16(fixed, 1 << 16))
    tokens = list(map(bytes.__add__, word_table, seps))
    picks = map(tokens.__getitem__, _u16(fixed, _TOKENS_PER_ENTRY << 16))
    return list(map(b"".join, zip(*[picks] * _TOKENS_PER_ENTRY, strict=True)))


def _gen_text(rng: random.Random, size: int) -> Iterator[bytes]:
    lookup = _text_table().__getitem__
    total = 0
    while total < size:
        # Entries average ~20 bytes; 64 extra lookups make a short tail unlikely.
        n = min(_BLOCK, size - total) // 20 + 64
        block = b"".join(map(lookup, _u16(rng, n)))
        if not total:
            block = block[:1].upper() + block[1:]
        total += len(block)
        # A block is cut into pieces so that no one part holds more than a chunk's worth
        # for long (the block itself is the unit of the random draws).
        for start in range(0, len(block), CHUNK_BYTES):
            yield block[start : start + CHUNK_BYTES]


# --- json -------------------------------------------------------------------------------------

_EVENTS = ("page_view", "click", "add_to_cart", "purchase", "login", "logout", "search", "scroll")
_COUNTRIES = ("US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "NL", "SE", "ES", "IT", "AU", "KR")
_DEVICES = ("desktop", "mobile", "tablet")
_BROWSERS = ("chrome", "firefox", "safari", "edge")
_TAGS = ("new", "returning", "promo", "beta", "vip", "trial", "eu", "us", "apac", "internal")
_NAME_TEXT = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert"
)
_NAME_PARTS = tuple((_NAME_TEXT + " sybil trent victor walter xavier yolanda zoe").split())
_PAGES = ("/", "/home", "/search", "/cart", "/checkout", "/account", "/help", "/blog")


def _json_lines(rng: random.Random) -> Iterator[bytes]:
    """JSON records, one a line, without end (:func:`_gathered` takes what it needs)."""
    users = [
        b'"user": "%s%d", ' % (rng.choice(_NAME_PARTS).encode(), rng.randrange(10000))
        for _ in range(4096)
    ]
    tag_lists = []
    for _ in range(256):
        tags = rng.sample(_TAGS, rng.randrange(4))
        tag_lists.append(b'"tags": [%s], ' % b", ".join(b'"%s"' % t.encode() for t in tags))
    pages = [p.encode() for p in _PAGES]
    events = [e.encode() for e in _EVENTS]
    countries = [c.encode() for c in _COUNTRIES]
    devices = [d.encode() for d in _DEVICES]
    browsers = [b.encode() for b in _BROWSERS]
    record_id = rng.randrange(1, 10**9)
    ts = 1_700_000_000_000 + rng.randrange(10**10)
    getrandbits = rng.getrandbits
    while True:
        x = getrandbits(160)
        record_id += 1
        ts += x & 0x3FF  # bits 0-9
        event = events[(x >> 10) & 7]  # 10-12
        page = pages[(x >> 13) & 7]  # 13-15
        if (x >> 16) & 3 == 0:  # 16-17
            page = b"%s/%d" % (page, (x >> 18) & 0xFFF)  # 18-29
        amount = (x >> 30) & 0xFFFF if event == b"purchase" else 0  # 30-45
        line = (
            b'{"id": %d, "ts": %d, "request_id": "%08x", %s"event": "%s", "page": "%s", '
            b'"country": "%s", "device": "%s", "browser": "%s", "duration_ms": %d, '
            b'"amount": %d.%02d, %s"ok": %s}\n'
            % (
                record_id,
                ts,
                (x >> 98) & 0xFFFFFFFF,  # 98-129
                users[(x >> 46) & 0xFFF],  # 46-57
                event,
                page,
                countries[((x >> 58) & 0xFF) % len(countries)],  # 58-65
                devices[((x >> 66) & 0xF) % len(devices)],  # 66-69
                browsers[(x >> 70) & 3],  # 70-71
                (x >> 72) & 0x1FFF,  # 72-84
                amount // 100,
                amount % 100,
                tag_lists[(x >> 85) & 0xFF] if (x >> 93) & 1 else b"",  # 85-93
                b"false" if (x >> 94) & 0xF == 0 else b"true",  # 94-97
            )
        )
        yield line


# --- log --------------------------------------------------------------------------------------

_HOSTS = (b"web-1", b"web-2", b"web-3", b"api-1", b"api-2")
_METHODS = (b"GET",) * 12 + (b"POST",) * 3 + (b"PUT", b"DELETE")
_PATHS = (
    "/",
    "/index.html",
    "/static/app.js",
    "/static/style.css",
    "/favicon.ico",
    "/api/v1/items",
    "/api/v1/items/{}",
    "/api/v1/users/{}",
    "/api/v1/orders/{}",
    "/api/v1/search",
    "/login",
    "/logout",
    "/healthz",
    "/metrics",
    "/images/{}.jpg",
    "/docs/getting-started",
)
_STATUSES: tuple[bytes, ...] = (b"200",) * 40 + (b"304",) * 8
_STATUSES += (b"201", b"204", b"301", b"302", b"404", b"404", b"400", b"401", b"403", b"500")
_STATUSES += (b"502", b"503")
_AGENTS = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0 Safari/537.36",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/17.4 Safari/605.1.15",
    b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    b"curl/8.5.0",
    b"python-requests/2.31.0",
    b"Go-http-client/1.1",
    b"kube-probe/1.29",
)
_APP_MESSAGES = (
    b"INFO cache refreshed in %dms",
    b"INFO request completed in %dms",
    b"WARN slow query took %dms",
    b"INFO connection pool size=%d",
    b"ERROR upstream timed out after %dms",
    b"DEBUG gc pause %dms",
    b"INFO worker heartbeat seq=%d",
    b"WARN retrying request attempt=%d",
)


def _log_lines(rng: random.Random) -> Iterator[bytes]:
    """Web server and application log lines, without end (:func:`_gathered` takes what it
    needs)."""
    # Line = timestamp + who (host, client address, user agent) + what (request, status, size)
    # + response time; who and what come from pools built per call.
    who: list[bytes] = []
    for _ in range(512):
        address = b"%d.%d.%d.%d" % (
            rng.choice((10, 172, 192, 203)),
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(1, 255),
        )
        who.append(b'%s nginx: %s - "%s"' % (rng.choice(_HOSTS), address, rng.choice(_AGENTS)))
    what: list[bytes] = []
    for _ in range(1024):
        path = rng.choice(_PATHS).replace("{}", str(rng.randrange(100000))).encode()
        status = rng.choice(_STATUSES)
        body_size = rng.randrange(100, 60000) if status == b"200" else 0
        what.append(b'"%s %s HTTP/1.1" %s %d' % (rng.choice(_METHODS), path, status, body_size))
    hosts = _HOSTS
    pids = [rng.randrange(100, 40000) for _ in _HOSTS]
    ms = (1_704_067_200 + rng.randrange(365 * 86400)) * 1000 + rng.randrange(1000)
    second = -1
    stamp = b""
    client = who[0]
    getrandbits = rng.getrandbits
    while True:
        x = getrandbits(64)
        ms += x & 0x7F  # bits 0-6
        if ms // 1000 != second:
            second = ms // 1000
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        if (x >> 7) & 0xF:  # 7-10
            if (x >> 45) & 1:  # 45: the same client again, else a new one
                client = who[(x >> 11) & 0x1FF]  # 11-19
            line = b"%s.%03dZ %s %s rt=0.%03d\n" % (
                stamp,
                ms % 1000,
                client,
                what[(x >> 20) & 0x3FF],  # 20-29
                ((x >> 30) & 0x3F) + ((x >> 36) & 0x7) * ((x >> 39) & 0x3F),  # 30-44
            )
        else:
            h = ((x >> 11) & 0xFF) % len(hosts)  # 11-18
            line = b"%s.%03dZ %s app[%d]: %s\n" % (
                stamp,
                ms % 1000,
                hosts[h],
                pids[h],
                _APP_MESSAGES[(x >> 19) & 7] % ((x >> 22) & 0x3FF),  # 19-31
            )
        yield line


# --- random / zeros ---------------------------------------------------------------------------


def _gen_random(rng: random.Random, size: int) -> Iterator[bytes]:
    for start in range(0, size, CHUNK_BYTES):
        yield rng.randbytes(min(CHUNK_BYTES, size - start))


def _gen_zeros(rng: random.Random, size: int) -> Iterator[bytes]:
    zeros = bytes(min(size, CHUNK_BYTES))
    for start in range(0, size, CHUNK_BYTES):
        yield zeros if size - start >= len(zeros) else zeros[: size - start]


_GENERATORS: dict[str, Callable[[random.Random, int], Iterator[bytes]]] = {
    "text": _gen_text,
    "json": lambda rng, size: _gathered(_json_lines(rng), size),
    "log": lambda rng, size: _gathered(_log_lines(rng), size),
    "random": _gen_random,
    "zeros": _gen_zeros,
}


def _parts(size: int, kind: str, seed: int, max_size: int) -> Iterator[bytes]:
    """The checked arguments' output as the generator's parts, cut to ``size`` in all."""
    if not _is_int(max_size) or max_size < 0:
        raise GenerateError("max_size must be an integer >= 0")
    if not _is_int(size):
        raise GenerateError("size must be an integer")
    if size < 0:
        raise GenerateError("size must be >= 0")
    if size > max_size:
        raise GenerateError(f"size must be <= {max_size}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise GenerateError(f"kind must be one of {', '.join(KINDS)}")
    if not _is_int(seed):
        raise GenerateError("seed must be an integer")
    if size == 0:
        return iter(())
    # Random() seeds from abs(seed); map negative seeds to distinct odd numbers instead.
    rng = random.Random(2 * seed if seed >= 0 else -2 * seed - 1)
    return _cut(_GENERATORS[kind](rng, size), size)


def generate(
    size: int, kind: str = "text", seed: int = 0, *, max_size: int = DEFAULT_MAX_SIZE
) -> bytes:
    """Return exactly ``size`` deterministic bytes of the given kind for ``seed``."""
    data = b"".join(_parts(size, kind, seed, max_size))
    if len(data) != size:
        raise AssertionError("generator produced the wrong size")
    return data


def iter_generate(
    size: int,
    kind: str = "text",
    seed: int = 0,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[bytes]:
    """The bytes of :func:`generate`, made and returned ``chunk_bytes`` at a time (the last
    chunk may be shorter): memory holds about a chunk, whatever ``size``. The arguments are
    checked at the call (GenerateError), before any byte is made."""
    return _rechunk(_parts(size, kind, seed, max_size), chunk_bytes)
