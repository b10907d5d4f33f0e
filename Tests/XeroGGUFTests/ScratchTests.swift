import XCTest
@testable import XeroGGUF
final class ScratchTests: XCTestCase {
    func testPrintSums() throws {
        let (model, tok, _) = try LlamaTests.load()
        LlamaModel.tap = { name, l, v in print("DBG \(name)-\(l)", v.reduce(0, +)) }
        _ = model.forward(tok.encode("Hello world", parseSpecial: false), cache: model.newCache())
        LlamaModel.tap = nil
    }
}
