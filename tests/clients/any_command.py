# `any_command(name, fields)`: a Flight SQL command (`google.protobuf.Any` of
# `arrow.flight.protocol.sql.NAME` with length-delimited `fields`), for speaking Flight
# SQL by hand with `pyarrow.flight`. Included by the integration tests and the benchmarks.
def any_command(name, fields):
    def varint(n):
        b = bytearray()
        while True:
            b.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(b)
    def field(num, data):
        return bytes([num << 3 | 2]) + varint(len(data)) + data
    value = b"".join(field(n, d) for n, d in fields)
    return field(1, ("type.googleapis.com/arrow.flight.protocol.sql." + name).encode()) + field(2, value)
