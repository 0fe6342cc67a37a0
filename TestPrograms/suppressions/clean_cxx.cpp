// A C++ program that frees everything it allocates, using what libstdc++ keeps for itself: the
// iostream objects, the emergency exception-handling pool, locale facets, and threads. With the
// default suppressions it must show zero blocks of every kind.
#include <iostream>
#include <locale>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

static int parse(const std::string &text) {
    if (text.empty()) throw std::invalid_argument("empty input");
    return std::stoi(text);
}

int main() {
    // A named locale every glibc has, not the environment's: std::locale("") throws (and the
    // program dies) when LANG names a locale that is not installed, as en_US.UTF-8 often is not.
    std::locale::global(std::locale("C.UTF-8"));
    std::cout.imbue(std::locale());

    std::vector<std::thread> threads;
    std::vector<int> results(4);
    for (int i = 0; i < 4; i++) {
        threads.emplace_back([i, &results] {
            std::ostringstream out;
            out << "thread " << i;
            results[i] = static_cast<int>(out.str().size());
        });
    }
    for (auto &thread : threads) thread.join();

    int caught = 0;
    for (const char *input : {"12", "", "x"}) {
        try {
            caught += parse(input);
        } catch (const std::exception &error) {
            caught += 100;
        }
    }
    auto owned = std::make_unique<std::map<std::string, std::vector<int>>>();
    (*owned)["a"] = results;
    std::cout << "caught " << caught << ", " << owned->size() << " entries" << std::endl;
    return 0;
}
