// Leaks through a class template member and a function template.
#include <string>
#include <vector>

static void *volatile sink;

namespace shapes {
template <typename T> struct Factory {
    __attribute__((noinline)) T *make() {
        return new T(); // @alloc Factory::make
    }
};
} // namespace shapes

template <typename T> __attribute__((noinline)) T *make_array(unsigned long n) {
    return new T[n]; // @alloc make_array
}

int main() {
    shapes::Factory<std::vector<int>> factory;
    sink = factory.make();
    sink = make_array<double>(9);
    sink = nullptr;
    return 0;
}
