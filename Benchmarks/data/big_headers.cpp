// Input for the "clang_syntax" benchmark workload, parsed with
// `clang++ -fsyntax-only` (the driver runs -cc1 in-process, no child exec).
// It pulls in the big standard headers (<regex> included but not
// instantiated, to keep the native run near 1 s) and instantiates a few
// containers and algorithms. clang's parser and Sema allocate heavily: many
// small AST nodes, most of them still live at exit (-disable-free).
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <regex>
#include <string>
#include <unordered_map>
#include <vector>

namespace bench {

inline std::unordered_map<std::string, std::vector<int>> group(const std::vector<std::string>& in) {
    std::unordered_map<std::string, std::vector<int>> out;
    for (size_t i = 0; i < in.size(); i++) out[in[i]].push_back(static_cast<int>(i));
    return out;
}

inline int run(int n) {
    std::vector<std::string> names;
    for (int i = 0; i < n; i++) names.push_back("r" + std::to_string(i % 7));
    std::sort(names.begin(), names.end());
    auto groups = group(names);
    std::map<std::string, size_t> sizes;
    for (const auto& kv : groups) sizes[kv.first] = kv.second.size();
    std::function<size_t(size_t, const std::pair<const std::string, size_t>&)> add =
        [](size_t acc, const std::pair<const std::string, size_t>& kv) { return acc + kv.second; };
    auto total = std::make_shared<size_t>(std::accumulate(sizes.begin(), sizes.end(), size_t{0}, add));
    return static_cast<int>(*total);
}

} // namespace bench

int main() { std::cout << bench::run(100) << '\n'; }
