import XCTest
@testable import XeroGGUF

/// The template families against the template texts of the model cards (Qwen 2.5 Instruct, Llama 3
/// Instruct, Llama 3.1 Instruct, Gemma 3 IT). No GGUF carrying these templates ships here, so the
/// renderings are checked against what those Jinja templates produce for the same messages, worked
/// out by hand from their text — not against llama-server's /apply-template (docs/models.md).
final class ChatTemplateFamilyTests: XCTestCase {
    static let qwen25 = #"""
    {%- if tools %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0]['role'] == 'system' %}
            {{- messages[0]['content'] }}
        {%- else %}
            {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
        {%- endif %}
    {%- else %}
        {%- if messages[0]['role'] == 'system' %}
            {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
        {%- else %}
            {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
    {%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endfor %}
    {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
    """#
    static let llama3 = #"""
    {% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
    """#
    static let llama31 = #"""
    {{- bos_token }}
    {%- if not date_string is defined %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
    {%- if messages[0]['role'] == 'system' %}
        {%- set system_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {%- set system_message = "" %}
    {%- endif %}
    {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
    {{- "Cutting Knowledge Date: December 2023\n" }}
    {{- "Today Date: " + date_string + "\n\n" }}
    {{- system_message }}
    {{- "<|eot_id|>" }}
    {%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}
    {%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
    """#
    static let gemma3 = #"""
    {{ bos_token }}
    {%- if messages[0]['role'] == 'system' -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
        {%- set loop_messages = messages[1:] -%}
    {%- else -%}
        {%- set first_user_prefix = "" -%}
        {%- set loop_messages = messages -%}
    {%- endif -%}
    {%- for message in loop_messages -%}
        {%- if (message['role'] == 'assistant') -%}{%- set role = "model" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}
        {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
        {{ message['content'] | trim }}
        {{ '<end_of_turn>\n' }}
    {%- endfor -%}
    {%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}
    """#

    let conversation = [ChatTemplate.Message(role: "system", content: "Be brief."), .init(role: "user", content: " Hi there \n"),
                        .init(role: "assistant", content: "Hello."), .init(role: "user", content: "Capital of France?")]

    func text(_ t: ChatTemplate, _ m: [ChatTemplate.Message]) -> String { t.render(m).map(\.text).joined() }

    func testQwenIsChatMLWithItsOwnDefaultSystemPrompt() throws {
        let t = try ChatTemplate(source: Self.qwen25)
        XCTAssertEqual(t.family, .chatml)
        XCTAssertEqual(t.defaultSystem, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        XCTAssertEqual(text(t, [.init(role: "user", content: "Hi")]),
                       "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(text(t, conversation),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there \n<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n")
    }

    func testLlama3TrimsContentAndLeavesBOSToTheTokenizer() throws {
        let t = try ChatTemplate(source: Self.llama3)
        XCTAssertEqual(t.family, .llama3); XCTAssertNil(t.knowledgeDate)
        XCTAssertEqual(text(t, conversation),
                       "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                       + "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
                       + "<|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    func testLlama31OpensWithItsDatedSystemHeader() throws {
        let t = try ChatTemplate(source: Self.llama31)
        XCTAssertEqual(t.knowledgeDate, "26 Jul 2024")
        XCTAssertEqual(text(t, [.init(role: "user", content: "Hi")]),
                       "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                       + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        XCTAssertTrue(text(t, conversation).hasPrefix("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"))
    }

    func testGemmaFoldsTheSystemMessageIntoTheFirstUserTurn() throws {
        let t = try ChatTemplate(source: Self.gemma3)
        XCTAssertEqual(t.family, .gemma)
        XCTAssertEqual(text(t, conversation),
                       "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                       + "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n")
        // Client content never carries special tokens: it is its own segment, without them.
        XCTAssertEqual(t.render(conversation).filter { !$0.allowSpecial }.map(\.text), ["Be brief.\n\nHi there", "Hello.", "Capital of France?"])
    }

    /// The worker's --default-system-prompt replaces the prompt, never the family.
    func testADefaultSystemPromptKeepsTheTemplatesFamily() throws {
        let hi = [ChatTemplate.Message(role: "user", content: "Hi")]
        let gemma = try ChatTemplate(source: Self.gemma3).withDefaultSystem("Be kind.")
        XCTAssertEqual(gemma.family, .gemma)
        XCTAssertEqual(text(gemma, hi), "<start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
        let llama = try ChatTemplate(source: Self.llama31).withDefaultSystem("Be kind.")
        XCTAssertEqual(llama.family, .llama3); XCTAssertEqual(llama.knowledgeDate, "26 Jul 2024")
        XCTAssertTrue(text(llama, hi).hasPrefix("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe kind.<|eot_id|>"))
        // A conversation's own system message wins; ChatML's is replaced, or removed with nil.
        XCTAssertEqual(text(gemma, conversation), text(try ChatTemplate(source: Self.gemma3), conversation))
        let qwen = try ChatTemplate(source: Self.qwen25)
        XCTAssertEqual(text(qwen.withDefaultSystem("Be kind."), hi), "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(text(qwen.withDefaultSystem(nil), hi), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    func testAnotherTemplateIsRefusedNamingIt() {
        XCTAssertThrowsError(try ChatTemplate(source: "{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}")) { e in
            XCTAssertTrue("\(e)".contains("### {{ m.role }}"), "\(e)")
        }
    }
}
