// Every C++ operator new / delete form the interposer hooks. Leaked: 6 blocks, 1,144 bytes.
#include <cstdio>
#include <cstring>
#include <new>
#include <unistd.h>

struct alignas(64) Wide {
    char bytes[128];
};

static void *volatile sink[16];
static int sunk;

template <typename T> static T *leak(T *p) {
    sink[sunk++] = (void *)p;
    return p;
}

int main() {
    leak(new int[25]);                                 // 100 bytes, operator new[]
    leak(new long(7));                                 // 8 bytes, operator new
    leak(new (std::nothrow) char[36]);                 // 36, operator new[] nothrow
    leak(new (std::nothrow) double(1.5));              // 8, operator new nothrow
    leak(new Wide);                                    // 128, aligned operator new
    leak(static_cast<char *>(::operator new[](864, std::align_val_t(256)))); // 864, aligned new[]

    for (int i = 0; i < 50; i++) {
        delete new int(i);
        delete[] new char[10 + i];
        delete new Wide;
        ::operator delete(::operator new(40), 40);     // sized delete
        ::operator delete[](::operator new[](64, std::align_val_t(128)), std::align_val_t(128));
        void *p = ::operator new(16, std::nothrow);
        ::operator delete(p, std::nothrow);
    }
    std::memset((void *)sink, 0, sizeof sink);
    const char text[] = "leaked 6 blocks 1144 bytes\n";
    write(1, text, sizeof text - 1);
    return 0;
}
