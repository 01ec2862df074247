/*
 * A stand-in for bcryptprimitives.dll under Wine 8, which lacks it.
 *
 * Rust's standard library (1.78 and later) imports ProcessPrng from bcryptprimitives.dll
 * to seed its hash maps; Wine 8 has no such DLL, so every Rust .exe fails to load with
 * STATUS_DLL_NOT_FOUND (c0000135). This DLL exports ProcessPrng and forwards to
 * advapi32's RtlGenRandom (exported as SystemFunction036), which Wine implements.
 * Test infrastructure only: it is copied into the Wine prefix by scripts/wine-setup, never
 * shipped.
 */
#include <windows.h>

typedef BOOLEAN(WINAPI *RtlGenRandomFn)(PVOID, ULONG);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    static RtlGenRandomFn gen = NULL;
    if (gen == NULL) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (advapi == NULL)
            return FALSE;
        gen = (RtlGenRandomFn)GetProcAddress(advapi, "SystemFunction036");
        if (gen == NULL)
            return FALSE;
    }
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!gen(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
