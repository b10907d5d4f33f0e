/// A strict, streaming `multipart/form-data` reader (RFC 7578 over RFC 2046) for the gateway's
/// file uploads. It replaces multipart-kit's parser, which traps on a header-name byte ≥ 0x80: this
/// one never indexes a table by an input byte, never traps on any input, and bounds everything it
/// keeps — file parts are streamed out chunk by chunk (`.body`), only non-file fields, part headers,
/// and a carry-over of at most one delimiter's length are buffered. No I/O: feed it the body.
///
/// Events, per part: `.partStart`, then either any number of `.body` slices (file parts) or exactly
/// one `.field` (other parts), then `.partEnd`. `finish()` checks that the closing delimiter came.
///
/// Strictness: every part must have one `Content-Disposition: form-data; name=…` header; header
/// names are RFC 7230 tokens; header values are UTF-8 (invalid UTF-8 is rejected, not repaired)
/// without control characters other than tab; lines end with CRLF (a bare CR or LF is an error);
/// the bytes after a delimiter must be `--` or optional spaces/tabs and CRLF.
public struct MultipartReader: Sendable {
    public let boundary: String
    public let maxParts: Int
    public let maxHeaderBytes: Int
    public let maxFieldBytes: Int
    private let isFile: @Sendable (_ name: String, _ filename: String?) -> Bool
    /// CRLF "--" boundary. CR occurs only at index 0 (boundaries cannot contain CR), so a failed
    /// partial match can only restart at the current byte — no KMP table needed.
    private let delimiter: [UInt8]

    private enum State: Equatable {
        case preamble, delimiterEnd, closeDash, padding, delimiterLF, headerLine, headerLF, body, epilogue
    }
    private var state: State = .preamble
    /// Delimiter bytes matched so far and held back (never more than `delimiter.count - 1`).
    /// Starts at 2, as if a CRLF preceded the body, so a body that starts with `--boundary` works.
    private var held = 2
    private var partCount = 0
    private var headerBytes = 0
    private var line: [UInt8] = []
    private var headers: [(name: String, value: String)] = []
    private var partName: String?
    private var partFilename: String?
    private var sawDisposition = false
    private var inFile = false
    private var field: [UInt8] = []
    private var failure: MultipartError?

    /// - Parameters:
    ///   - boundary: the `boundary` parameter of the Content-Type, unquoted: 1…70 RFC 2046 `bchars`, not ending in a space.
    ///   - maxParts: the most parts accepted (`.tooManyParts` beyond).
    ///   - maxHeaderBytes: the most bytes of one part's header block, CRLFs included (`.headerTooLarge` beyond).
    ///   - maxFieldBytes: the most bytes of one non-file part's value (`.fieldTooLarge` beyond).
    ///   - isFile: which parts are streamed as files; by default, those whose Content-Disposition has a `filename` (even `""`).
    public init(boundary: String, maxParts: Int = 16, maxHeaderBytes: Int = 8 * 1024, maxFieldBytes: Int = 4 * 1024,
                isFile: @escaping @Sendable (_ name: String, _ filename: String?) -> Bool = { _, filename in filename != nil }) throws(MultipartError) {
        let b = Array(boundary.utf8)
        guard (1...70).contains(b.count) else { throw .invalidBoundary("must be 1 to 70 characters, got \(b.count)") }
        guard b.allSatisfy(Self.isBoundaryChar) else { throw .invalidBoundary("contains a character RFC 2046 does not allow") }
        guard b.last != 0x20 else { throw .invalidBoundary("must not end with a space") }
        self.boundary = boundary
        self.maxParts = maxParts
        self.maxHeaderBytes = maxHeaderBytes
        self.maxFieldBytes = maxFieldBytes
        self.isFile = isFile
        delimiter = [13, 10, 0x2D, 0x2D] + b
    }

    /// The unquoted `boundary` parameter of a `multipart/form-data` Content-Type, or nil when the
    /// media type is something else, the parameters do not parse, or there is no boundary.
    public static func boundary(fromContentType contentType: String) -> String? {
        let s = Array(contentType.utf8)
        var p = 0
        skipOWS(s, &p)
        guard let type = token(s, &p), p < s.count, s[p] == 0x2F else { return nil }
        p += 1
        guard let sub = token(s, &p), asciiLower(type) == "multipart", asciiLower(sub) == "form-data",
              let params = try? parameters(s, &p) else { return nil }
        guard let b = params.first(where: { $0.name == "boundary" }) else { return nil }
        return String(decoding: b.value, as: UTF8.self)
    }

    /// Reads the next chunk of the body; a delimiter or CRLF may be split across chunks anywhere.
    /// `.body` slices share storage with the chunk (or its copy). After an error, every call throws it again.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(MultipartError) -> [MultipartEvent] {
        if let failure { throw failure }
        let buf = bytes as? [UInt8] ?? Array(bytes)
        var events: [MultipartEvent] = []
        do throws(MultipartError) { try run(buf, &events) } catch { failure = error; throw error }
        return events
    }

    /// Call at the end of the body: throws `.unterminated` unless the closing delimiter was seen.
    /// Anything after the closing delimiter (the epilogue) is ignored.
    public mutating func finish() throws(MultipartError) {
        if let failure { throw failure }
        guard state == .epilogue else { failure = .unterminated; throw .unterminated }
    }

    // MARK: The machine

    private mutating func run(_ buf: [UInt8], _ events: inout [MultipartEvent]) throws(MultipartError) {
        var i = 0
        while i < buf.count {
            switch state {
            case .preamble, .body:
                guard let next = try scan(buf, from: i, &events) else { return }
                i = next
                if state == .body { try endPart(&events) }
                state = .delimiterEnd
                headerBytes = 0
            case .epilogue:
                return
            default:
                try step(buf[i], &events)
                i += 1
            }
        }
    }

    /// Looks for the delimiter from `buf[from...]`, emitting the body bytes before it (kept back:
    /// a trailing partial match). Returns the index just past the delimiter, or nil if not found.
    private mutating func scan(_ buf: [UInt8], from: Int, _ events: inout [MultipartEvent]) throws(MultipartError) -> Int? {
        let n = delimiter.count, end = buf.count
        var i = from
        let start = from
        var past = held   // held bytes from earlier chunks; all of buf[start..<i] is held while past > 0
        while i < end {
            if held == 0 {
                guard let j = buf[i..<end].firstIndex(of: 13) else { i = end; break }
                held = 1
                i = j + 1
            } else if buf[i] == delimiter[held] {
                held += 1
                i += 1
                if held == n {
                    if past == 0 { try emit(buf[start..<(i - n)], &events) }
                    held = 0
                    return i
                }
            } else {
                // Not the delimiter after all: the held bytes are data. Those from this chunk stay in
                // the pending run `buf[start...]`; re-examine this byte (it may be a new CR).
                if past > 0 { try emit(delimiter[0..<past], &events); past = 0 }
                held = 0
            }
        }
        if past == 0 { try emit(buf[start..<(end - held)], &events) }
        return nil
    }

    private mutating func emit(_ s: ArraySlice<UInt8>, _ events: inout [MultipartEvent]) throws(MultipartError) {
        guard !s.isEmpty, state == .body else { return }   // preamble bytes are dropped
        if inFile {
            events.append(.body(s))
        } else {
            guard s.count <= maxFieldBytes - field.count else { throw .fieldTooLarge(name: partName, limit: maxFieldBytes) }
            field.append(contentsOf: s)
        }
    }

    /// One byte of the delimiter's tail or of the part headers.
    private mutating func step(_ b: UInt8, _ events: inout [MultipartEvent]) throws(MultipartError) {
        headerBytes += 1
        guard headerBytes <= maxHeaderBytes else { throw .headerTooLarge(limit: maxHeaderBytes) }
        switch state {
        case .delimiterEnd:
            switch b {
            case 0x2D: state = .closeDash
            case 0x20, 0x09: state = .padding
            case 13: state = .delimiterLF
            default: throw .malformed("unexpected data after a boundary delimiter (the boundary must not occur inside a part)")
            }
        case .closeDash:
            guard b == 0x2D else { throw .malformed("a boundary delimiter is followed by a single '-'") }
            state = .epilogue
        case .padding:
            switch b {
            case 0x20, 0x09: break
            case 13: state = .delimiterLF
            default: throw .malformed("unexpected data after a boundary delimiter")
            }
        case .delimiterLF:
            guard b == 10 else { throw .malformed("a boundary delimiter line does not end with CRLF") }
            partCount += 1
            guard partCount <= maxParts else { throw .tooManyParts(limit: maxParts) }
            headers = []
            partName = nil
            partFilename = nil
            sawDisposition = false
            line.removeAll(keepingCapacity: true)
            headerBytes = 0
            state = .headerLine
        case .headerLine:
            switch b {
            case 13: state = .headerLF
            case 10: throw .malformed("a part header line ends with a bare LF")
            default: line.append(b)
            }
        case .headerLF:
            guard b == 10 else { throw .malformed("a CR in the part headers is not followed by LF") }
            if line.isEmpty {
                try startBody(&events)
            } else {
                try headerLine()
                line.removeAll(keepingCapacity: true)
                state = .headerLine
            }
        case .preamble, .body, .epilogue:
            break   // handled by `run`
        }
    }

    private mutating func headerLine() throws(MultipartError) {
        guard let colon = line.firstIndex(of: 0x3A) else { throw .malformed("a part header line has no ':'") }
        let nameBytes = line[..<colon]
        guard !nameBytes.isEmpty else { throw .malformed("a part header has an empty name") }
        guard nameBytes.allSatisfy(Self.isTokenChar) else { throw .malformed("a part header name contains a character that is not allowed") }
        var lo = colon + 1, hi = line.count
        while lo < hi, line[lo] == 0x20 || line[lo] == 0x09 { lo += 1 }
        while hi > lo, line[hi - 1] == 0x20 || line[hi - 1] == 0x09 { hi -= 1 }
        let valueBytes = line[lo..<hi]
        guard valueBytes.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw .malformed("a part header value contains a control character")
        }
        guard let value = Self.utf8(valueBytes) else { throw .malformed("a part header value is not valid UTF-8") }
        let name = String(decoding: nameBytes, as: UTF8.self)
        headers.append((name: name, value: value))
        if Self.asciiLower(nameBytes) == "content-disposition" {
            guard !sawDisposition else { throw .malformed("a part has more than one Content-Disposition header") }
            sawDisposition = true
            try disposition(Array(valueBytes))
        }
    }

    /// `form-data; name="…"; filename="…"` — parameter names case-insensitive, values tokens or quoted strings.
    private mutating func disposition(_ s: [UInt8]) throws(MultipartError) {
        var p = 0
        guard let type = Self.token(s, &p), Self.asciiLower(type) == "form-data" else {
            throw .malformed("a part's Content-Disposition is not 'form-data'")
        }
        var name: String?, filename: String?
        for param in try Self.parameters(s, &p) {
            guard param.name == "name" || param.name == "filename" else { continue }
            guard let v = Self.utf8(param.value[...]) else { throw .malformed("a Content-Disposition parameter is not valid UTF-8") }
            if param.name == "name" {
                guard name == nil else { throw .malformed("a Content-Disposition has two 'name' parameters") }
                name = v
            } else {
                guard filename == nil else { throw .malformed("a Content-Disposition has two 'filename' parameters") }
                filename = v
            }
        }
        guard let name else { throw .malformed("a part's Content-Disposition has no 'name' parameter") }
        partName = name
        partFilename = filename
    }

    private mutating func startBody(_ events: inout [MultipartEvent]) throws(MultipartError) {
        guard sawDisposition, let name = partName else { throw .malformed("a part has no Content-Disposition header") }
        events.append(.partStart(headers: headers, name: name, filename: partFilename))
        inFile = isFile(name, partFilename)
        field = []
        held = 0
        state = .body
    }

    private mutating func endPart(_ events: inout [MultipartEvent]) throws(MultipartError) {
        if !inFile { events.append(.field(name: partName ?? "", value: field)) }
        field = []
        events.append(.partEnd)
    }

    // MARK: Lexing (no lookup tables: nothing here can index out of range on any byte)

    /// RFC 7230 `tchar`.
    static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: true
        default: false
        }
    }

    /// RFC 2046 `bchars`: DIGIT / ALPHA / ' ( ) + _ , - . / : = ? and space.
    static func isBoundaryChar(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case 0x27, 0x28, 0x29, 0x2B, 0x5F, 0x2C, 0x2D, 0x2E, 0x2F, 0x3A, 0x3D, 0x3F, 0x20: true
        default: false
        }
    }

    private static func skipOWS(_ s: [UInt8], _ p: inout Int) {
        while p < s.count, s[p] == 0x20 || s[p] == 0x09 { p += 1 }
    }

    private static func token(_ s: [UInt8], _ p: inout Int) -> ArraySlice<UInt8>? {
        let start = p
        while p < s.count, isTokenChar(s[p]) { p += 1 }
        return p > start ? s[start..<p] : nil
    }

    /// `*( OWS ";" OWS name OWS "=" OWS ( token / quoted-string ) ) OWS` to the end; names lowercased.
    private static func parameters(_ s: [UInt8], _ p: inout Int) throws(MultipartError) -> [(name: String, value: [UInt8])] {
        var out: [(name: String, value: [UInt8])] = []
        while true {
            skipOWS(s, &p)
            if p == s.count { return out }
            guard s[p] == 0x3B else { throw .malformed("unexpected character in a header's parameters") }
            p += 1
            skipOWS(s, &p)
            guard let name = token(s, &p) else { throw .malformed("a header parameter has no name") }
            skipOWS(s, &p)
            guard p < s.count, s[p] == 0x3D else { throw .malformed("a header parameter has no '='") }
            p += 1
            skipOWS(s, &p)
            var value: [UInt8] = []
            if p < s.count, s[p] == 0x22 {
                p += 1
                var closed = false
                while p < s.count {
                    let b = s[p]
                    p += 1
                    if b == 0x22 { closed = true; break }
                    if b == 0x5C {   // quoted-pair
                        guard p < s.count else { break }
                        value.append(s[p])
                        p += 1
                    } else {
                        value.append(b)
                    }
                }
                guard closed else { throw .malformed("a quoted header parameter is not closed") }
            } else {
                guard let t = token(s, &p) else { throw .malformed("a header parameter has no value") }
                value = Array(t)
            }
            out.append((name: asciiLower(name), value: value))
        }
    }

    private static func asciiLower(_ s: ArraySlice<UInt8>) -> String {
        String(decoding: s.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// Strict UTF-8: nil on any ill-formed sequence (no U+FFFD repair).
    static func utf8(_ s: ArraySlice<UInt8>) -> String? {
        var it = s.makeIterator()
        var decoder = UTF8()
        var scalars = String.UnicodeScalarView()
        while true {
            switch decoder.decode(&it) {
            case .scalarValue(let v): scalars.append(v)
            case .emptyInput: return String(scalars)
            case .error: return nil
            }
        }
    }
}

/// What `MultipartReader.feed` reports. Per part: `.partStart`, then `.body`* (file parts) or one
/// `.field` (other parts), then `.partEnd`.
public enum MultipartEvent: Sendable, Equatable, CustomStringConvertible {
    /// A part's headers are complete. `headers` keep their order and spelling; `name` and `filename`
    /// are the Content-Disposition parameters (`name` is required by RFC 7578).
    case partStart(headers: [(name: String, value: String)], name: String, filename: String?)
    /// The next bytes of a file part, as they arrive; concatenated, they are the part's body exactly.
    case body(ArraySlice<UInt8>)
    /// A complete non-file part, at most `maxFieldBytes` long.
    case field(name: String, value: [UInt8])
    case partEnd

    public static func == (a: MultipartEvent, b: MultipartEvent) -> Bool {
        switch (a, b) {
        case let (.partStart(h1, n1, f1), .partStart(h2, n2, f2)):
            n1 == n2 && f1 == f2 && h1.count == h2.count && zip(h1, h2).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        case let (.body(x), .body(y)): x == y
        case let (.field(n1, v1), .field(n2, v2)): n1 == n2 && v1 == v2
        case (.partEnd, .partEnd): true
        default: false
        }
    }

    public var description: String {
        switch self {
        case let .partStart(h, n, f): "partStart(name: \(n), filename: \(f ?? "nil"), headers: \(h.map { "\($0.name): \($0.value)" }))"
        case let .body(b): "body(\(b.count) bytes)"
        case let .field(n, v): "field(\(n) = \(String(decoding: v, as: UTF8.self)))"
        case .partEnd: "partEnd"
        }
    }
}

/// Why a multipart body was refused. `message` is for the client; `code` goes in the OpenAI error's `code`.
public enum MultipartError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The Content-Type's boundary is not a valid RFC 2046 boundary (thrown by `init`).
    case invalidBoundary(String)
    /// The body breaks the grammar; the string says how.
    case malformed(String)
    case tooManyParts(limit: Int)
    case headerTooLarge(limit: Int)
    case fieldTooLarge(name: String?, limit: Int)
    /// The body ended before the closing delimiter (`--boundary--`).
    case unterminated

    public var message: String {
        switch self {
        case .invalidBoundary(let why): "The multipart boundary is invalid: it \(why)."
        case .malformed(let why): "The multipart body is malformed: \(why)."
        case .tooManyParts(let limit): "The multipart body has more than \(limit) parts."
        case .headerTooLarge(let limit): "A multipart part's headers are larger than \(limit) bytes."
        case .fieldTooLarge(let name, let limit): "The multipart field '\(name ?? "")' is larger than \(limit) bytes."
        case .unterminated: "The multipart body ended before its closing boundary delimiter."
        }
    }

    public var code: String {
        switch self {
        case .invalidBoundary: "invalid_multipart_boundary"
        case .malformed: "invalid_multipart"
        case .tooManyParts: "too_many_parts"
        case .headerTooLarge: "part_headers_too_large"
        case .fieldTooLarge: "field_too_large"
        case .unterminated: "unterminated_multipart"
        }
    }

    public var description: String { message }

    /// The 400 the gateway sends for this error.
    public var apiError: APIError {
        var param = "file"
        if case .fieldTooLarge(let name?, _) = self { param = name }
        return .invalidRequest(message, param: param, code: code)
    }
}
