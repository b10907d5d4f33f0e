import Foundation
import Logging
import XeroCore

/// `--log-format json`: one JSON object per line on stderr — `ts` (ISO 8601, ms), `level`,
/// `logger`, `message`, then the line's metadata as string fields (`request_id`, `project`,
/// `endpoint`, `tier`, `worker`, … where the line has them). Log shippers read it as is.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    private static let lock = NSLock()

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        var fields: [(String, String)] = [("ts", Self.timestamp()), ("level", level.rawValue), ("logger", label), ("message", message.description)]
        var merged = metadata
        if let extra { merged.merge(extra) { $1 } }
        for key in merged.keys.sorted() where !["ts", "level", "logger", "message"].contains(key) {
            fields.append((key, merged[key]!.description))
        }
        var w = JSONWriter(capacity: 256)
        w.objectStart()
        for (k, v) in fields {
            w.key(k)
            w.value(v)
        }
        w.objectEnd()
        var bytes = w.bytes
        bytes.append(UInt8(ascii: "\n"))
        Self.lock.lock()
        defer { Self.lock.unlock() }
        // write(2) on fd 2 directly: one call per line, nothing buffered to lose at a crash.
        bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = write(2, buf.baseAddress! + done, buf.count - done)
                if n <= 0 { break }
                done += n
            }
        }
    }

    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var t = time_t(tv.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, Int(tv.tv_usec / 1000))
    }
}
