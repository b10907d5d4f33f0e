/// One metric family as the platform exports it: its name (with `MetricSpec.prefix`), kind, help
/// and label names. Every family is declared once, in `MetricCatalog`, so its help text and labels
/// are the same wherever it is made (the Prometheus registry stops the process on a mismatch).
public struct MetricSpec: Sendable, Hashable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    /// vLLM's metric names with our prefix instead of `vllm:` (docs/operations.md, "Metrics"), so
    /// a vLLM dashboard transfers by changing the prefix.
    public static let prefix = "xerotier:"

    public let name: String
    public let kind: Kind
    public let help: String
    public let labels: [String]
    /// Upper bounds in seconds (histograms only).
    public let buckets: [Double]

    init(_ suffix: String, _ kind: Kind, _ help: String, labels: [String] = [], buckets: [Double] = []) {
        self.name = Self.prefix + suffix
        self.kind = kind
        self.help = help
        self.labels = labels
        self.buckets = buckets
    }
}
