/// Arithmetic for numbers that came from outside the process: it saturates instead of trapping,
/// so a value that slipped past validation can never crash the process that does the sum.
extension FixedWidthInteger where Self: SignedInteger {
    public func addingSaturated(_ other: Self) -> Self {
        let (v, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : v
    }

    public func multipliedSaturated(by other: Self) -> Self {
        let (v, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? ((self < 0) == (other < 0) ? .max : .min) : v
    }

    public func subtractingSaturated(_ other: Self) -> Self {
        let (v, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : v
    }
}
