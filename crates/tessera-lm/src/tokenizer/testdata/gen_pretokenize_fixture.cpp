// Writes the pre-tokenizer splits of testdata/pretokenize_llama_cpp.json with llama.cpp itself
// (its unicode.cpp: the hand-written GPT-2/Llama 3/Qwen splitters and the std::regex fallback).
//
//   LLAMA=.../llama_cpp_python-0.3.36/vendor/llama.cpp
//   python3 -c 'import json,struct,sys; t=json.load(open("pretokenize_llama_cpp.json"))["texts"];
//     sys.stdout.buffer.write(b"".join(struct.pack("<I",len(s.encode()))+s.encode() for s in t))' > texts.bin
//   g++ -O1 -std=c++17 -I$LLAMA/src gen_pretokenize_fixture.cpp $LLAMA/src/unicode.cpp $LLAMA/src/unicode-data.cpp
//   ./a.out texts.bin $LLAMA/src/llama-vocab.cpp > splits.txt
//
// splits.txt has a "#name" line per regex set, then one line per text with the piece lengths in
// bytes; the "splits" of the JSON file are those lines (names as tokenizer.ggml.pre spells them).
// The DeepSeek regex lists are read from llama-vocab.cpp so their literal ranges are exact.
#include "unicode.h"
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>
#include <map>
// Reads texts (u32 length + bytes) from argv[1]; for each regex set, prints the split lengths (bytes) per text.
int main(int argc, char** argv) {
    std::ifstream in(argv[1], std::ios::binary);
    std::vector<std::string> texts;
    uint32_t n;
    while (in.read((char*)&n, 4)) { std::string s(n, '\0'); in.read(&s[0], n); texts.push_back(s); }
    std::map<std::string, std::vector<std::string>> sets = {
        {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "\\p{N}+", "[0-9][0-9][0-9]"}},
        {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "[0-9][0-9][0-9]"}},
        {"starcoder", {"\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}},
        {"gpt2", {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"}},
        {"llama3", {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
        {"qwen2", {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
        {"qwen35", {"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
        {"poro", {" ?[^(\\s|.,!?…。，、।۔،)]+"}},
        {"viking", {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}},
        {"laguna", {"[^\\n]+|[\\n]+", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    };
    {
        std::ifstream src(argv[2]);
        std::stringstream ss; ss << src.rdbuf();
        std::string s = ss.str();
        for (auto name : {std::string("deepseek-llm"), std::string("deepseek-coder")}) {
            std::string label = name == "deepseek-llm" ? "LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM:\n                regex_exprs" : "LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_CODER:\n                regex_exprs";
            size_t i = s.find(label);
            std::vector<std::string> rx;
            size_t p = s.find("{", i);
            size_t end = s.find("};", p);
            while (true) {
                size_t a = s.find("\"", p);
                if (a == std::string::npos || a > end) break;
                size_t b = s.find("\",", a + 1);
                std::string lit = s.substr(a + 1, b - a - 1);
                std::string u;
                for (size_t k = 0; k < lit.size(); ++k) {
                    if (lit[k] == '\\' && k + 1 < lit.size()) {
                        char c = lit[++k];
                        if (c == 'r') u += '\r'; else if (c == 'n') u += '\n'; else u += c;
                    } else u += lit[k];
                }
                rx.push_back(u);
                p = b + 2;
            }
            std::cerr << name << ": " << rx.size() << " regexes\n";
            for (auto & r : rx) std::cerr << "  " << r.substr(0, 40) << "\n";
            sets[name] = rx;
        }
    }
    for (auto & kv : sets) {
        std::cout << "#" << kv.first << "\n";
        for (auto & t : texts) {
            auto words = unicode_regex_split(t, kv.second, false);
            for (auto & w : words) std::cout << w.size() << " ";
            std::cout << "\n";
        }
    }
}
