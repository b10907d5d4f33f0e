import CXeroKernels
import Foundation

/// Copies of weight matrices in a layout made for the kernels, owned for the model's life.
/// Q4_1 and Q8_0 rows are repacked four at a time (`xk_repack_x4`): block b of four rows is one
/// record (their heads, then their values), so decoding converts four rows' scales at once and,
/// for Q4_1, loads two rows' nibbles in one register (`xk_gemv_q4_1x4`, `xk_gemv_q8_0x4`); every
/// other tile reads the same records. The values and their order are unchanged, so the bits are
/// those of the file's layout (KernelTests). `XERO_REPACK=0` keeps the file's layout (to compare).
final class RepackedWeights: @unchecked Sendable {
    private var buffers: [UnsafeMutableRawPointer] = []
    static let allowed = ProcessInfo.processInfo.environment["XERO_REPACK"] != "0"

    /// `m` with its repacked copy attached when its type and shape have one. `mapped`: `m`'s rows
    /// are pages of a read-only file mapping, which are then handed back to the kernel (read again
    /// from the file only if something still reads them, e.g. an embedding lookup), so the copy
    /// replaces them in memory instead of doubling it.
    func repacked(_ m: WeightMatrix, mapped: Bool = false) -> WeightMatrix {
        guard Self.allowed, m.type == .q4_1 || m.type == .q8_0, m.rows % 4 == 0, m.rows > 0 else { return m }
        let size = m.rows * m.rowBytes
        let copy = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        xk_repack_x4(m.kernelType!, m.base, m.rowBytes, Int32(m.rows), copy)
        buffers.append(copy)
        if mapped {
            // Only whole pages inside the matrix: its neighbours in the file stay resident.
            let page = Int(getpagesize()), start = Int(bitPattern: m.base)
            let lo = (start + page - 1) / page * page, hi = (start + size) / page * page
            if hi > lo { madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_DONTNEED) }
        }
        var out = m
        out.packedX4 = UnsafeRawPointer(copy)
        return out
    }

    deinit { for b in buffers { b.deallocate() } }
}
