import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A GGUF (v3) model file, memory-mapped: header, metadata, tensor directory, and a pointer to each
/// tensor's bytes (no copy). Every read is bounds-checked; a truncated or corrupt file throws a
/// `GGUFError` saying what is wrong — never a crash. The first piece of the built-in GGUF engine
/// (the forward pass, tokenizer and sampling build on it).
public final class GGUFFile: @unchecked Sendable {
    public enum Value: Sendable, Equatable {
        case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String), array([Value])

        public var string: String? { if case let .string(s) = self { return s } else { return nil } }
        public var int: Int? {
            switch self {
            case let .uint(u): return u <= UInt64(Int.max) ? Int(u) : nil
            case let .int(i): return Int(i)
            default: return nil
            }
        }
        public var double: Double? {
            switch self {
            case let .float(f): return f
            case let .uint(u): return Double(u)
            case let .int(i): return Double(i)
            default: return nil
            }
        }
        public var array: [Value]? { if case let .array(a) = self { return a } else { return nil } }
    }

    /// ggml tensor types this project knows the layout of.
    public enum TensorType: UInt32, Sendable, CaseIterable {
        case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9, q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15, bf16 = 30

        /// (elements per block, bytes per block)
        public var blockLayout: (elements: Int, bytes: Int) {
            switch self {
            case .f32: return (1, 4)
            case .f16, .bf16: return (1, 2)
            case .q4_0: return (32, 18)
            case .q4_1: return (32, 20)
            case .q5_0: return (32, 22)
            case .q5_1: return (32, 24)
            case .q8_0: return (32, 34)
            case .q8_1: return (32, 36)
            case .q2_k: return (256, 84)
            case .q3_k: return (256, 110)
            case .q4_k: return (256, 144)
            case .q5_k: return (256, 176)
            case .q6_k: return (256, 210)
            case .q8_k: return (256, 292)
            }
        }
    }

    public struct Tensor: Sendable {
        public let name: String
        /// ggml order: dims[0] is the contiguous (row) dimension.
        public let dims: [Int]
        public let type: TensorType
        /// Offset of the tensor's bytes from the start of the file.
        public let fileOffset: Int
        public let byteCount: Int
        public var elementCount: Int { dims.reduce(1, *) }
    }

    public let path: String
    public let version: UInt32
    public let metadata: [String: Value]
    public let tensors: [String: Tensor]
    /// Tensor names in file order.
    public let tensorOrder: [String]
    public let alignment: Int
    private let base: UnsafeMutableRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GGUFError.io("cannot stat \(path)") }
        size = Int(st.st_size)
        guard size >= 24 else { throw GGUFError.truncated("\(path) is \(size) bytes: too short for a GGUF header") }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else { throw GGUFError.io("cannot map \(path)") }
        base = p
        do {
            var r = Reader(base: UnsafeRawPointer(p), size: size)
            guard try r.bytes(4) == Array("GGUF".utf8) else { throw GGUFError.corrupt("not a GGUF file (bad magic)") }
            version = try r.u32()
            guard version == 3 || version == 2 else { throw GGUFError.unsupported("GGUF version \(version) (supported: 2, 3)") }
            let tensorCount = try r.u64(), kvCount = try r.u64()
            // Every entry takes at least a few bytes: counts beyond the file size are corrupt.
            guard tensorCount <= UInt64(size / 8), kvCount <= UInt64(size / 8) else {
                throw GGUFError.truncated("header claims \(tensorCount) tensors and \(kvCount) metadata entries, more than \(size) bytes can hold (truncated or corrupt)")
            }
            var meta: [String: Value] = [:]
            for _ in 0..<kvCount {
                let key = try r.string()
                meta[key] = try r.value(type: try r.u32(), depth: 0)
            }
            metadata = meta
            var order: [String] = [], infos: [(String, [Int], TensorType, UInt64)] = []
            for _ in 0..<tensorCount {
                let name = try r.string()
                let nDims = try r.u32()
                guard nDims >= 1, nDims <= 4 else { throw GGUFError.corrupt("tensor \(name) has \(nDims) dimensions") }
                var dims: [Int] = []
                for _ in 0..<nDims {
                    let d = try r.u64()
                    guard d >= 1, d <= UInt64(size) else { throw GGUFError.corrupt("tensor \(name) has dimension \(d)") }
                    dims.append(Int(d))
                }
                let raw = try r.u32()
                guard let type = TensorType(rawValue: raw) else { throw GGUFError.unsupported("tensor \(name) has ggml type \(raw), which this engine does not know") }
                infos.append((name, dims, type, try r.u64()))
                order.append(name)
            }
            let align = meta["general.alignment"]?.int ?? 32
            guard align > 0, align & (align - 1) == 0 else { throw GGUFError.corrupt("general.alignment \(align) is not a power of two") }
            alignment = align
            let dataStart = (r.offset + align - 1) / align * align
            var out: [String: Tensor] = [:]
            for (name, dims, type, offset) in infos {
                let (per, bytes) = type.blockLayout
                var elements = 1
                for d in dims {
                    let (m, overflow) = elements.multipliedReportingOverflow(by: d)
                    guard !overflow, m <= size * 8 else { throw GGUFError.corrupt("tensor \(name) is impossibly large") }
                    elements = m
                }
                guard dims[0] % per == 0 else { throw GGUFError.corrupt("tensor \(name): row of \(dims[0]) is not a whole number of \(per)-element blocks") }
                let byteCount = elements / per * bytes
                guard offset <= UInt64(size), dataStart + Int(offset) + byteCount <= size else {
                    throw GGUFError.truncated("tensor \(name) lies beyond the end of the file (\(size) bytes): the file is truncated")
                }
                out[name] = Tensor(name: name, dims: dims, type: type, fileOffset: dataStart + Int(offset), byteCount: byteCount)
            }
            tensors = out
            tensorOrder = order
        } catch {
            munmap(p, size)
            throw error
        }
    }

    deinit { munmap(base, size) }

    /// The bytes of a tensor, valid while this file is alive.
    public func bytes(of tensor: Tensor) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: UnsafeRawPointer(base) + tensor.fileOffset, count: tensor.byteCount)
    }

    public var architecture: String? { metadata["general.architecture"]?.string }

    /// Refuses a model that uses a tensor type the engine cannot compute with, naming them.
    public func requireTensorTypes(_ supported: Set<TensorType>) throws {
        let missing = Set(tensors.values.map(\.type)).subtracting(supported)
        guard missing.isEmpty else {
            let names = missing.map { "\($0)" }.sorted().joined(separator: ", ")
            throw GGUFError.unsupported("tensor types not supported by this engine: \(names)")
        }
    }

    struct Reader {
        let base: UnsafeRawPointer
        let size: Int
        var offset = 0

        mutating func take(_ n: Int) throws -> UnsafeRawPointer {
            guard n >= 0, size - offset >= n else { throw GGUFError.truncated("the file ends at byte \(size) while reading \(n) bytes at \(offset)") }
            defer { offset += n }
            return base + offset
        }
        mutating func bytes(_ n: Int) throws -> [UInt8] { Array(UnsafeRawBufferPointer(start: try take(n), count: n)) }
        mutating func u8() throws -> UInt8 { try take(1).load(as: UInt8.self) }
        mutating func u16() throws -> UInt16 { UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self)) }
        mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
        mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }

        mutating func string() throws -> String {
            let n = try u64()
            guard n <= UInt64(size - offset) else { throw GGUFError.truncated("a string of \(n) bytes runs past the end of the file at \(offset)") }
            let p = try take(Int(n))
            return String(decoding: UnsafeRawBufferPointer(start: p, count: Int(n)), as: UTF8.self)
        }

        mutating func value(type: UInt32, depth: Int) throws -> Value {
            switch type {
            case 0: return .uint(UInt64(try u8()))
            case 1: return .int(Int64(Int8(bitPattern: try u8())))
            case 2: return .uint(UInt64(try u16()))
            case 3: return .int(Int64(Int16(bitPattern: try u16())))
            case 4: return .uint(UInt64(try u32()))
            case 5: return .int(Int64(Int32(bitPattern: try u32())))
            case 6: return .float(Double(Float(bitPattern: try u32())))
            case 7:
                let b = try u8()
                guard b <= 1 else { throw GGUFError.corrupt("bool value \(b) at \(offset - 1)") }
                return .bool(b == 1)
            case 8: return .string(try string())
            case 9:
                guard depth < 4 else { throw GGUFError.corrupt("arrays nested too deep") }
                let elementType = try u32()
                let count = try u64()
                guard count <= UInt64(size - offset) else {
                    throw GGUFError.truncated("an array claims \(count) elements, more than the \(size - offset) bytes left (truncated or corrupt)")
                }
                var out: [Value] = []
                out.reserveCapacity(Int(count))
                for _ in 0..<count { out.append(try value(type: elementType, depth: depth + 1)) }
                return .array(out)
            case 10: return .uint(try u64())
            case 11: return .int(Int64(bitPattern: try u64()))
            case 12: return .float(Double(bitPattern: try u64()))
            default: throw GGUFError.corrupt("unknown metadata value type \(type) at \(offset - 4)")
            }
        }
    }
}

public enum GGUFError: Error, Equatable, CustomStringConvertible {
    case io(String), truncated(String), corrupt(String), unsupported(String)
    public var description: String {
        switch self {
        case let .io(m): return "GGUF: \(m)"
        case let .truncated(m): return "GGUF file truncated: \(m)"
        case let .corrupt(m): return "GGUF file corrupt: \(m)"
        case let .unsupported(m): return "GGUF model not supported: \(m)"
        }
    }
}
