/** Polling that stops while the tab is hidden and catches up as soon as it shows again. */
import { useEffect, useRef } from 'preact/hooks';

export function usePoll(fn: (signal: AbortSignal) => Promise<void> | void, intervalMs: number, deps: unknown[]): void {
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let running = false;
    let ctrl = new AbortController();
    const tick = async (): Promise<void> => {
      if (stopped || running) return;
      clearTimeout(timer);
      if (document.visibilityState === 'hidden') return;
      running = true;
      ctrl = new AbortController();
      try {
        await fnRef.current(ctrl.signal);
      } catch {
        // the callback shows its own errors
      } finally {
        running = false;
      }
      if (!stopped && !document.hidden) timer = setTimeout(() => void tick(), intervalMs);
    };
    const onVisible = (): void => {
      if (document.visibilityState === 'visible') void tick();
      else clearTimeout(timer);
    };
    document.addEventListener('visibilitychange', onVisible);
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
      ctrl.abort();
      document.removeEventListener('visibilitychange', onVisible);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [intervalMs, ...deps]);
}
