// Dumps every contiguous F32 tensor of one decode to $DUMP_DIR/<name>.bin (last write wins).
#include "arg.h"
#include "common.h"
#include "llama.h"
#include "ggml.h"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
static bool dumping = true;
static bool cb(struct ggml_tensor * t, bool ask, void *) {
    if (ask) return true;
    if (!dumping) return true;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return true;
    std::string name = t->name;
    for (auto & c : name) if (c == '/' || c == ' ' || c == '(' || c == ')') c = '_';
    std::string path = std::string(getenv("DUMP_DIR")) + "/" + name + ".bin";
    FILE * f = fopen(path.c_str(), "wb");
    fwrite(t->data, 1, ggml_nbytes(t), f);
    fclose(f);
    return true;
}
int main(int argc, char ** argv) {
    common_params params;
    common_init();
    if (!common_params_parse(argc, argv, params, LLAMA_EXAMPLE_COMMON)) return 1;
    llama_backend_init();
    params.cb_eval = cb;
    params.cb_eval_user_data = nullptr;
    params.warmup = false;
    auto init = common_init_from_params(params);
    auto * ctx = init->context();
    std::vector<llama_token> tokens = common_tokenize(ctx, params.prompt, false, true);
    // DUMP_DECODE_TOKEN=<id>: dump the single-token step after the prompt instead of the prompt's.
    const char * next = getenv("DUMP_DECODE_TOKEN");
    dumping = next == nullptr;
    common_batch batch = common_batch_get_one(ctx, tokens);
    if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch.get())) return 1;
    if (next) {
        dumping = true;
        std::vector<llama_token> one = { (llama_token)atoi(next) };
        common_batch b1 = common_batch_get_one(ctx, one);
        if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, b1.get())) return 1;
    }
    llama_backend_free();
    return 0;
}
