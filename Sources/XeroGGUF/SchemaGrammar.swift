import XeroCore

/// `response_format: json_schema` as a byte grammar: which bytes may come next so that the text
/// stays a prefix of some JSON value the compiled schema accepts. A state is a small set of
/// threads — one per way the text so far can still be read (an `anyOf`, an `enum`, a key that is
/// a prefix of two property names) — each a stack of frames. Threads that cannot take a byte die;
/// identical ones merge. Property order is free, `required` keys must all appear before `}`, no key
/// appears twice, and whitespace between tokens is capped (docs/completions.md, "json_schema").
public struct SchemaGrammar: ByteGrammar {
    struct Frame: Hashable {
        enum Kind: UInt8 { case value, object, key, array, string, number, literal }
        var kind: Kind
        /// The schema node (`value`, `object`, `key`: its object, `array`, `literal`).
        var node: Int32
        /// object: 0 first key or `}`, 1 a key after `,`, 2 `:`, 3 after a value.
        /// array: 0 first item or `]`, 1 after an item, 2 an item after `,`.
        /// string/key: 0 plain, 1 after `\`, 2…5 hex digits left + 1, 6 after `\ud` (`hexStep`).
        /// number: a `NumberMode`.
        var phase: UInt8 = 0
        /// object: the properties seen. key: the properties whose name still matches.
        var bits: UInt64 = 0
        /// array: items so far. key: name bytes matched. literal: bytes matched.
        var count: Int32 = 0
        /// object: the property whose value comes next (−1: an additional key). literal: option.
        var aux: Int32 = 0
    }

    enum NumberMode: UInt8 { case minus, zero, integer, dot, fraction, exponent, exponentSign, exponentDigits }

    struct Thread: Hashable {
        var frames: [Frame]
        var spaces: UInt8 = 0
    }

    let schema: JSONSchema
    var threads: [Thread]

    static let maxThreads = 64
    static let maxDepth = 48
    static let maxSpaces: UInt8 = 24
    /// A key that is not a property name may be at most this long (bytes).
    static let maxKeyBytes: Int32 = 256

    public init(schema: JSONSchema) {
        self.schema = schema
        threads = [Thread(frames: [Frame(kind: .value, node: Int32(schema.root))])]
    }

    // MARK: ByteGrammar

    /// Some reading of the text is a whole value (a number at the root counts: it may end here).
    public var isComplete: Bool {
        threads.contains { t in t.frames.isEmpty || (t.frames.count == 1 && t.frames[0].kind == .number && Self.numberMayEnd(t.frames[0])) }
    }

    /// Every reading is a whole value: nothing but the end may follow.
    public var isFinished: Bool { threads.allSatisfy { $0.frames.isEmpty } }

    public func shortestCompletion() -> [UInt8]? { completion() }

    public var inPlainString: Bool {
        !threads.isEmpty && threads.allSatisfy { t in t.frames.last.map { $0.kind == .string && $0.phase == 0 } ?? false }
    }

    public mutating func accept(_ b: UInt8) -> Bool {
        var next: [Thread] = []
        for t in threads {
            var t = t
            step(&t, b, into: &next, expansions: 0)
            if next.count > Self.maxThreads { break }
        }
        if next.count > 1 {
            var seen = Set<Thread>()
            next = next.filter { seen.insert($0).inserted }
        }
        // Every thread is a valid reading; past the cap the rest are dropped (an enum of a thousand
        // options with one prefix then keeps its first 64), so a schema cannot make a step cost
        // more than 64 readings.
        if next.count > Self.maxThreads { next.removeLast(next.count - Self.maxThreads) }
        threads = next
        return !threads.isEmpty
    }

    /// The shortest text that finishes a value from here (nil: none does).
    public func completion() -> [UInt8]? {
        var best: [UInt8]?
        for t in threads {
            if let c = finish(t), best == nil || c.count < best!.count { best = c }
        }
        return best
    }

    // MARK: Stepping

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }
    static func numberMayEnd(_ f: Frame) -> Bool {
        let m = NumberMode(rawValue: f.phase)!
        return m == .zero || m == .integer || m == .fraction || m == .exponentDigits
    }

    /// Feeds `b` to one thread, appending every thread it becomes.
    func step(_ t: inout Thread, _ b: UInt8, into out: inout [Thread], expansions: Int) {
        guard var f = t.frames.last else { return }          // a finished value takes nothing more
        let top = t.frames.count - 1
        switch f.kind {
        case .string:
            switch f.phase {
            case 0:
                if b == UInt8(ascii: "\"") { t.frames.removeLast(); completeValue(&t); out.append(t); return }
                if b == UInt8(ascii: "\\") { f.phase = 1 } else if b < 0x20 { return }
            case 1:
                if b == UInt8(ascii: "u") { f.phase = 5 } else if JSONGrammar.escapes.contains(b) { f.phase = 0 } else { return }
            default:
                guard let p = Self.hexStep(f.phase, b) else { return }
                f.phase = p
            }
            t.frames[top] = f; out.append(t)
        case .key:
            stepKey(&t, f, b, into: &out)
        case .literal:
            let option = literalOptions(f.node)[Int(f.aux)]
            guard b == option[Int(f.count)] else { return }
            f.count += 1
            if Int(f.count) == option.count { t.frames.removeLast(); completeValue(&t) } else { t.frames[top] = f }
            out.append(t)
        case .number:
            if stepNumber(&f, b, integer: schema.nodes[Int(f.node)] == .integer) { t.frames[top] = f; out.append(t); return }
            guard Self.numberMayEnd(f) else { return }
            t.frames.removeLast()
            completeValue(&t)
            step(&t, b, into: &out, expansions: expansions)   // the byte after a number belongs to its container
        case .value:
            if Self.isSpace(b) { space(&t, into: &out); return }
            t.spaces = 0
            t.frames.removeLast()
            start(&t, node: Int(f.node), b, into: &out, expansions: expansions)
        case .object:
            if Self.isSpace(b) { space(&t, into: &out); return }
            t.spaces = 0
            guard case let .object(o) = schema.nodes[Int(f.node)] else { return }
            switch (f.phase, b) {
            case (0, UInt8(ascii: "\"")), (1, UInt8(ascii: "\"")):
                // Candidates: the unseen names; with additional keys allowed, every name, so that
                // a seen one is recognised at the closing quote and refused (no duplicate keys).
                var candidates: UInt64 = 0
                for i in o.properties.indices where o.additional != nil || f.bits & (1 << UInt64(i)) == 0 { candidates |= 1 << UInt64(i) }
                guard o.additional != nil || candidates != 0 else { return }
                t.frames.append(Frame(kind: .key, node: f.node, bits: candidates))
            case (0, UInt8(ascii: "}")), (3, UInt8(ascii: "}")):
                guard requiredSeen(o, f.bits) else { return }
                t.frames.removeLast()
                completeValue(&t)
            case (3, UInt8(ascii: ",")):
                guard o.additional != nil || o.properties.indices.contains(where: { f.bits & (1 << UInt64($0)) == 0 }) else { return }
                f.phase = 1; t.frames[top] = f
            case (2, UInt8(ascii: ":")):
                let child = f.aux >= 0 ? o.properties[Int(f.aux)].node : o.additional!
                f.phase = 3; t.frames[top] = f
                t.frames.append(Frame(kind: .value, node: Int32(child)))
            default: return
            }
            out.append(t)
        case .array:
            if Self.isSpace(b) { space(&t, into: &out); return }
            guard case let .array(item, minItems, maxItems) = schema.nodes[Int(f.node)] else { return }
            switch (f.phase, b) {
            case (0, UInt8(ascii: "]")) where minItems == 0, (1, UInt8(ascii: "]")) where Int(f.count) >= minItems:
                t.spaces = 0
                t.frames.removeLast(); completeValue(&t); out.append(t)
            case (1, UInt8(ascii: ",")):
                guard maxItems.map({ Int(f.count) < $0 }) ?? true else { return }
                t.spaces = 0
                f.phase = 2; t.frames[top] = f; out.append(t)
            case (0, _), (2, _):
                guard f.phase == 2 || (maxItems ?? 1) > 0 else { return }
                t.frames.append(Frame(kind: .value, node: Int32(item)))
                step(&t, b, into: &out, expansions: expansions)
            default: return
            }
        }
    }

    private func space(_ t: inout Thread, into out: inout [Thread]) {
        t.spaces += 1
        if t.spaces <= Self.maxSpaces { out.append(t) }
    }

    /// The first byte of a value of `node`: picks the frame it opens (several for `anyOf`).
    private func start(_ t: inout Thread, node: Int, _ b: UInt8, into out: inout [Thread], expansions: Int) {
        switch schema.nodes[node] {
        case .never: return
        case let .anyOf(alts):
            guard expansions < 16 else { return }                  // a reference cycle that consumes nothing
            for alt in alts {
                var branch = t
                branch.frames.append(Frame(kind: .value, node: Int32(alt)))
                step(&branch, b, into: &out, expansions: expansions + 1)
            }
        case let .literals(options):
            for (i, o) in options.enumerated() where o.first == b {
                var branch = t
                if o.count == 1 { completeValue(&branch) } else { branch.frames.append(Frame(kind: .literal, node: Int32(node), count: 1, aux: Int32(i))) }
                out.append(branch)
            }
        case .string:
            guard b == UInt8(ascii: "\"") else { return }
            t.frames.append(Frame(kind: .string, node: Int32(node))); out.append(t)
        case .number, .integer:
            let mode: NumberMode
            switch b {
            case UInt8(ascii: "-"): mode = .minus
            case UInt8(ascii: "0"): mode = .zero
            case 49...57: mode = .integer
            default: return
            }
            t.frames.append(Frame(kind: .number, node: Int32(node), phase: mode.rawValue, count: mode == .minus ? 0 : 1)); out.append(t)
        case .object:
            guard b == UInt8(ascii: "{"), t.frames.count < Self.maxDepth else { return }
            t.frames.append(Frame(kind: .object, node: Int32(node))); out.append(t)
        case .array:
            guard b == UInt8(ascii: "["), t.frames.count < Self.maxDepth else { return }
            t.frames.append(Frame(kind: .array, node: Int32(node))); out.append(t)
        }
    }

    private func stepKey(_ t: inout Thread, _ key: Frame, _ b: UInt8, into out: inout [Thread]) {
        var f = key
        guard case let .object(o) = schema.nodes[Int(f.node)] else { return }
        let generic = o.additional != nil
        if f.phase == 0 && b == UInt8(ascii: "\"") {
            // The key ends: a property whose whole name matched, else an additional key.
            var chosen: Int32 = -1
            for (i, p) in o.properties.enumerated() where f.bits & (1 << UInt64(i)) != 0 && p.encoded.count == Int(f.count) { chosen = Int32(i) }
            guard chosen >= 0 || generic else { return }
            var obj = t.frames[t.frames.count - 2]
            if chosen >= 0 && obj.bits & (1 << UInt64(chosen)) != 0 { return }   // a duplicate key
            t.frames.removeLast()
            if chosen >= 0 { obj.bits |= 1 << UInt64(chosen) }
            obj.aux = chosen
            obj.phase = 2
            t.frames[t.frames.count - 1] = obj
            out.append(t)
            return
        }
        // Narrow the candidates to names with this byte here.
        var still: UInt64 = 0
        for (i, p) in o.properties.enumerated() where f.bits & (1 << UInt64(i)) != 0 && Int(f.count) < p.encoded.count && p.encoded[Int(f.count)] == b {
            still |= 1 << UInt64(i)
        }
        if generic {
            // Any string (the candidates only decide which schema its value takes).
            switch f.phase {
            case 0: if b == UInt8(ascii: "\\") { f.phase = 1 } else if b < 0x20 { return }
            case 1: if b == UInt8(ascii: "u") { f.phase = 5 } else if JSONGrammar.escapes.contains(b) { f.phase = 0 } else { return }
            default: guard let p = Self.hexStep(f.phase, b) else { return }; f.phase = p
            }
            guard f.count < Self.maxKeyBytes || still != 0 else { return }
        } else if still == 0 {
            return
        }
        f.bits = still
        f.count += 1
        t.frames[t.frames.count - 1] = f
        out.append(t)
    }

    /// Digits per part of a number: 15 before the point (exact in a double and an Int64), 15
    /// after, 2 in the exponent. A model could otherwise write digits until the budget runs out,
    /// and a reader's number type overflows long before.
    static let maxIntegerDigits: Int32 = 15, maxFractionDigits: Int32 = 15, maxExponentDigits: Int32 = 2

    private func stepNumber(_ f: inout Frame, _ b: UInt8, integer: Bool) -> Bool {
        let digit = b >= 48 && b <= 57
        func set(_ m: NumberMode, digits: Int32) -> Bool { f.phase = m.rawValue; f.count = digits; return true }
        switch NumberMode(rawValue: f.phase)! {
        case .minus:
            if b == UInt8(ascii: "0") { return set(.zero, digits: 1) }
            if b >= 49 && b <= 57 { return set(.integer, digits: 1) }
            return false
        case .zero, .integer:
            if digit {
                guard NumberMode(rawValue: f.phase) == .integer, f.count < Self.maxIntegerDigits else { return false }
                f.count += 1; return true
            }
            if integer { return false }
            if b == UInt8(ascii: ".") { return set(.dot, digits: 0) }
            if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { return set(.exponent, digits: 0) }
            return false
        case .dot:
            guard digit else { return false }
            return set(.fraction, digits: 1)
        case .fraction:
            if digit { guard f.count < Self.maxFractionDigits else { return false }; f.count += 1; return true }
            if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { return set(.exponent, digits: 0) }
            return false
        case .exponent:
            if b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { return set(.exponentSign, digits: 0) }
            guard digit else { return false }
            return set(.exponentDigits, digits: 1)
        case .exponentSign:
            guard digit else { return false }
            return set(.exponentDigits, digits: 1)
        case .exponentDigits:
            guard digit, f.count < Self.maxExponentDigits else { return false }
            f.count += 1; return true
        }
    }

    /// A value just ended: its container moves past it.
    private func completeValue(_ t: inout Thread) {
        guard let i = t.frames.indices.last else { return }
        var parent = t.frames[i]
        switch parent.kind {
        case .array: parent.count += 1; parent.phase = 1
        case .object: parent.phase = 3
        default: break
        }
        t.frames[i] = parent
    }

    private func requiredSeen(_ o: JSONSchema.Object, _ seen: UInt64) -> Bool {
        for (i, p) in o.properties.enumerated() where p.required && seen & (1 << UInt64(i)) == 0 { return false }
        return true
    }

    private func literalOptions(_ node: Int32) -> [[UInt8]] {
        if case let .literals(o) = schema.nodes[Int(node)] { return o }
        return []
    }

    static func isHex(_ b: UInt8) -> Bool { (b >= 48 && b <= 57) || (b | 0x20 >= 97 && b | 0x20 <= 102) }

    /// A `\uXXXX` digit: phase 5…2 = 4…1 digits left, 6 = the second digit after a `d`. Surrogate
    /// escapes (`\uD800`…`\uDFFF`) are refused: alone they are not text, and a model writes
    /// characters outside the BMP as UTF-8 anyway.
    static func hexLeft(_ phase: UInt8) -> Int { phase == 6 ? 3 : phase >= 2 ? Int(phase) - 1 : 0 }

    static func hexStep(_ phase: UInt8, _ b: UInt8) -> UInt8? {
        guard isHex(b) else { return nil }
        if phase == 5 && b | 0x20 == UInt8(ascii: "d") { return 6 }
        if phase == 6 { return b >= 48 && b <= 55 ? 3 : nil }
        return phase == 2 ? 0 : phase - 1
    }

    // MARK: Finishing

    /// The shortest bytes that finish thread `t`'s value, by walking its stack from the top.
    private func finish(_ start: Thread) -> [UInt8]? {
        var t = start
        var out: [UInt8] = []
        func feed(_ bytes: [UInt8]) -> Bool {
            for b in bytes {
                var next: [Thread] = []
                step(&t, b, into: &next, expansions: 0)
                guard let first = next.first else { return false }
                t = first
                out.append(b)
            }
            return true
        }
        var steps = 0
        while let f = t.frames.last {
            steps += 1
            guard steps < 4096 else { return nil }
            switch f.kind {
            case .value:
                guard let v = schema.minimal[Int(f.node)] else { return nil }
                out += v
                t.frames.removeLast()
                completeValue(&t)
            case .string:
                out += f.phase == 1 ? Array("n\"".utf8) : Array(repeating: UInt8(ascii: "0"), count: Self.hexLeft(f.phase)) + [UInt8(ascii: "\"")]
                t.frames.removeLast(); completeValue(&t)
            case .number:
                if !Self.numberMayEnd(f) { out.append(UInt8(ascii: "0")) }
                t.frames.removeLast(); completeValue(&t)
            case .literal:
                out += literalOptions(f.node)[Int(f.aux)][Int(f.count)...]
                t.frames.removeLast(); completeValue(&t)
            case .key:
                guard case let .object(o) = schema.nodes[Int(f.node)] else { return nil }
                // The shortest matching name (plus its value), else end an additional key here.
                var bestRest: [UInt8]?
                let seen = t.frames[t.frames.count - 2].bits
                for (i, p) in o.properties.enumerated() where f.bits & ~seen & (1 << UInt64(i)) != 0 && p.encoded.count >= Int(f.count) {
                    let rest = Array(p.encoded[Int(f.count)...])
                    if schema.minimal[p.node] != nil, bestRest == nil || rest.count < bestRest!.count { bestRest = rest }
                }
                var rest = bestRest ?? []
                if bestRest == nil {
                    guard o.additional != nil else { return nil }
                    if f.phase == 1 { rest = [UInt8(ascii: "n")] } else if f.phase >= 2 { rest = Array(repeating: UInt8(ascii: "0"), count: Self.hexLeft(f.phase)) }
                }
                guard feed(rest + Array("\":".utf8)) else { return nil }
            case .object:
                guard case let .object(o) = schema.nodes[Int(f.node)] else { return nil }
                if f.phase == 2 { guard feed([UInt8(ascii: ":")]) else { return nil }; continue }
                let missing = o.properties.enumerated().first { $0.element.required && f.bits & (1 << UInt64($0.offset)) == 0 }
                if let (_, p) = missing {
                    guard feed((f.phase == 3 ? [UInt8(ascii: ",")] : []) + [UInt8(ascii: "\"")] + p.encoded + Array("\":".utf8)) else { return nil }
                } else if f.phase == 1 {
                    // After a comma a key must come: the shortest unseen name, else an empty additional key.
                    let unseen = o.properties.enumerated().filter { f.bits & (1 << UInt64($0.offset)) == 0 && schema.minimal[$0.element.node] != nil }
                    let name = unseen.min { $0.element.encoded.count < $1.element.encoded.count }?.element.encoded ?? []
                    guard feed([UInt8(ascii: "\"")] + name + Array("\":".utf8)) else { return nil }
                } else {
                    guard feed([UInt8(ascii: "}")]) else { return nil }
                }
            case .array:
                guard case let .array(item, minItems, _) = schema.nodes[Int(f.node)] else { return nil }
                if f.phase == 2 || Int(f.count) < minItems {
                    if f.phase == 1 { guard feed([UInt8(ascii: ",")]) else { return nil } }
                    guard let v = schema.minimal[item] else { return nil }
                    out += v
                    completeValue(&t)      // the item is written: count it
                } else {
                    guard feed([UInt8(ascii: "]")]) else { return nil }
                }
            }
        }
        return out
    }
}
