"""Hand-written PyTorch models of common kinds, for the traced converter's tests."""
import torch, torch.nn as nn, torch.nn.functional as F
import neuralgraph as ng
from neuralgraph.trace import trace_builder

class ResMLP(nn.Module):
    def __init__(s): super().__init__(); s.a=nn.Linear(4,6); s.b=nn.Linear(6,6); s.c=nn.Linear(6,3)
    def forward(s,x): h=torch.relu(s.a(x)); h = h + torch.relu(s.b(h)); return s.c(h)
class Twice(nn.Module):
    def __init__(s): super().__init__(); s.a=nn.Linear(4,6); s.b=nn.Linear(6,6); s.c=nn.Linear(6,3)
    def forward(s,x): return s.c(torch.tanh(s.b(torch.tanh(s.b(torch.tanh(s.a(x)))))))
class Unused(nn.Module):
    def __init__(s): super().__init__(); s.a=nn.Linear(4,6); s.u=nn.Linear(6,6); s.c=nn.Linear(6,3)
    def forward(s,x): return s.c(torch.relu(s.a(x)))
class OutOfOrder(nn.Module):
    def __init__(s): super().__init__(); s.last=nn.Linear(6,3); s.first=nn.Linear(4,6)
    def forward(s,x): return s.last(torch.relu(s.first(x)))
class Concat(nn.Module):
    def __init__(s): super().__init__(); s.a=nn.Linear(4,5); s.b=nn.Linear(5,3); s.c=nn.Linear(9,2)
    def forward(s,x): h=torch.relu(s.a(x)); return s.c(torch.cat([x, h], -1)) + 0*s.b(h).sum()
class SwiGLU(nn.Module):
    def __init__(s): super().__init__(); s.g=nn.Linear(4,6,bias=False); s.u=nn.Linear(4,6,bias=False); s.d=nn.Linear(6,3)
    def forward(s,x): return s.d(F.silu(s.g(x))*s.u(x))
class LayerScale(nn.Module):
    def __init__(s): super().__init__(); s.a=nn.Linear(4,6); s.gamma=nn.Parameter(torch.ones(6)); s.c=nn.Linear(6,3)
    def forward(s,x): return s.c(torch.relu(s.a(x))*s.gamma)
class RawParams(nn.Module):
    def __init__(s): super().__init__(); s.w1=nn.Parameter(torch.randn(6,4)); s.b1=nn.Parameter(torch.zeros(6)); s.w2=nn.Parameter(torch.randn(3,6))
    def forward(s,x): return F.linear(torch.relu(F.linear(x,s.w1,s.b1)), s.w2)
class Tied(nn.Module):
    def __init__(s): super().__init__(); s.emb=nn.Embedding(10,6); s.h=nn.Linear(6,6); s.head=nn.Linear(6,10,bias=False); s.head.weight=s.emb.weight
    def forward(s,ids): return s.head(torch.tanh(s.h(s.emb(ids))))
class ResBlock(nn.Module):
    def __init__(s): super().__init__(); s.c1=nn.Conv2d(3,8,3,padding=1); s.bn=nn.BatchNorm2d(8); s.c2=nn.Conv2d(8,8,3,padding=1); s.proj=nn.Conv2d(3,8,1); s.fc=nn.Linear(8,4)
    def forward(s,x): h=s.c2(torch.relu(s.bn(s.c1(x)))); h=torch.relu(h+s.proj(x)); return s.fc(h.mean((2,3)))
class Grouped(nn.Module):
    def __init__(s): super().__init__(); s.c1=nn.Conv2d(2,8,3); s.g=nn.Conv2d(8,8,3,groups=4); s.dw=nn.Conv2d(8,8,3,groups=8,padding=1); s.fc=nn.Linear(8,3)
    def forward(s,x): return s.fc(torch.relu(s.dw(torch.relu(s.g(torch.relu(s.c1(x)))))).mean((2,3)))
class Attn(nn.Module):
    def __init__(s, d=8, h=2): super().__init__(); s.h=h; s.q=nn.Linear(d,d); s.k=nn.Linear(d,d); s.v=nn.Linear(d,d); s.o=nn.Linear(d,d); s.ln=nn.LayerNorm(d); s.emb=nn.Linear(3,d); s.out=nn.Linear(d,2)
    def forward(s,x):
        x=s.emb(x); B,T,D=x.shape; h=s.ln(x)
        q=s.q(h).view(B,T,s.h,-1).transpose(1,2); k=s.k(h).view(B,T,s.h,-1).transpose(1,2); v=s.v(h).view(B,T,s.h,-1).transpose(1,2)
        a=torch.softmax(q@k.transpose(-1,-2)/2,-1)@v
        x = x + s.o(a.transpose(1,2).reshape(B,T,D)); return s.out(x)
class TE(nn.Module):
    def __init__(s): super().__init__(); s.inp=nn.Linear(3,8); s.enc=nn.TransformerEncoder(nn.TransformerEncoderLayer(8,2,16,batch_first=True, dropout=0.0),2); s.out=nn.Linear(8,2)
    def forward(s,x): return s.out(s.enc(s.inp(x)))
class MHA(nn.Module):
    def __init__(s): super().__init__(); s.inp=nn.Linear(3,8); s.mha=nn.MultiheadAttention(8,2,batch_first=True); s.out=nn.Linear(8,2)
    def forward(s,x): h=s.inp(x); return s.out(s.mha(h,h,h,need_weights=False)[0])
class GRUNet(nn.Module):
    def __init__(s): super().__init__(); s.gru=nn.GRU(3,5,batch_first=True); s.out=nn.Linear(5,2)
    def forward(s,x): return s.out(s.gru(x)[0][:, -1])

ZOO = {"resmlp": (ResMLP, (torch.randn(4,4),)), "twice": (Twice, (torch.randn(4,4),)), "unused": (Unused, (torch.randn(4,4),)),
 "outoforder": (OutOfOrder, (torch.randn(4,4),)), "concat": (Concat, (torch.randn(4,4),)), "swiglu": (SwiGLU, (torch.randn(4,4),)),
 "layerscale": (LayerScale, (torch.randn(4,4),)), "raw": (RawParams, (torch.randn(4,4),)), "tied": (Tied, (torch.randint(0,10,(2,5)),)),
 "resblock": (ResBlock, (torch.randn(2,3,8,8),)), "grouped": (Grouped, (torch.randn(2,2,9,9),)), "attn": (Attn, (torch.randn(2,5,3),)),
 "te": (TE, (torch.randn(2,5,3),)), "mha": (MHA, (torch.randn(2,5,3),)), "gru": (GRUNet, (torch.randn(2,4,3),))}
if __name__ == "__main__":  # pragma: no cover
    import sys, traceback
    for name, (cls, x) in ZOO.items():
        if len(sys.argv) > 1 and name not in sys.argv[1:]: continue
        torch.manual_seed(0); m = cls()
        try:
            g = trace_builder(m, x).build(lpe=0)
            r = ng.verify(m, g, inputs=x, trials=4)
            print(f"{name:10s} {'OK ' if r else 'BAD'} groups={len(g.groups)} syms={[s.name for s in g.symmetries]}")
            if not r: print(r)
        except Exception as e:
            print(f"{name:10s} ERR {type(e).__name__}: {e}")
            if "-v" in sys.argv: traceback.print_exc()
